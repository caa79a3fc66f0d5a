//! One TLS client configuration for every HTTP client the bot builds (Discord delivery, the model
//! server, the search page): the system's trusted roots are read and parsed once per process,
//! instead of once per client and again whenever a reload rebuilds a client.

use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;

/// The shared client configuration — what reqwest would build for each client by itself: ring,
/// TLS 1.2 and 1.3, certificates checked by the platform verifier against the system's trusted
/// roots, HTTP/1.1 offered by ALPN. Cloning it shares the verifier and its roots.
pub fn client_config() -> Result<ClientConfig, String> {
    static CONFIG: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    CONFIG.get_or_init(build).clone()
}

fn build() -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|err| format!("cannot load the system's trusted certificates: {err}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|err| format!("cannot configure TLS: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_configuration_offers_http1_and_builds_a_client() {
        let config = client_config().unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(config.enable_sni);
        // reqwest recognises it as a rustls configuration (an unknown one fails the build).
        reqwest::Client::builder()
            .tls_backend_preconfigured(config.clone())
            .build()
            .unwrap();
        // Built once: a second call is a clone of the same configuration.
        assert_eq!(
            client_config().unwrap().alpn_protocols,
            config.alpn_protocols
        );
    }
}
