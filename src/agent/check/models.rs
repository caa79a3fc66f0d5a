//! Reading what a server says about its models for `check-model`: the names `/v1/models` lists
//! and the context length, where a server states it — in its `/v1/models` entry
//! (`context_length`: OpenRouter, LM Studio; `max_model_len`: vLLM; `context_window`: Groq;
//! `meta.n_ctx_train`: llama.cpp's server) or in llama.cpp's `/props`
//! (`default_generation_settings.n_ctx`, `n_ctx`).

use serde_json::Value;

/// The model ids of a `/v1/models` answer (`data[].id`; Ollama's `/api/tags` shape, `models[]
/// .name`, too).
pub fn model_ids(models: &Value) -> Vec<String> {
    let entries = models["data"]
        .as_array()
        .or_else(|| models["models"].as_array());
    entries
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            entry["id"]
                .as_str()
                .or_else(|| entry["name"].as_str())
                .or_else(|| entry["model"].as_str())
        })
        .map(str::to_owned)
        .collect()
}

/// The context length the `/v1/models` entry of `model` states, and the field it came from.
/// With one model listed, that entry counts even under another name (servers that serve one
/// model whatever the request names).
pub fn context_from_models(models: &Value, model: &str) -> Option<(u64, &'static str)> {
    let entries = models["data"].as_array()?;
    let entry = entries
        .iter()
        .find(|entry| entry["id"].as_str() == Some(model))
        .or_else(|| (entries.len() == 1).then(|| &entries[0]))?;
    [
        (&entry["context_length"], "context_length"),
        (&entry["max_model_len"], "max_model_len"),
        (&entry["context_window"], "context_window"),
        (&entry["meta"]["n_ctx"], "meta.n_ctx"),
        (&entry["meta"]["n_ctx_train"], "meta.n_ctx_train"),
    ]
    .into_iter()
    .find_map(|(value, field)| positive(value).map(|n| (n, field)))
}

/// The context length llama.cpp's `/props` states.
pub fn context_from_props(props: &Value) -> Option<(u64, &'static str)> {
    positive(&props["default_generation_settings"]["n_ctx"])
        .map(|n| (n, "n_ctx from /props"))
        .or_else(|| positive(&props["n_ctx"]).map(|n| (n, "n_ctx from /props")))
}

fn positive(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_read_from_openai_and_ollama_shapes() {
        let openai = json!({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model"}, {"id": "o3", "object": "model"}]});
        assert_eq!(model_ids(&openai), ["gpt-4o-mini", "o3"]);
        let ollama = json!({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}]});
        assert_eq!(model_ids(&ollama), ["qwen3:8b"]);
        assert!(model_ids(&json!({"error": "nope"})).is_empty());
    }

    #[test]
    fn the_context_is_found_where_servers_put_it() {
        let llama_server = json!({"data": [{"id": "smol.gguf", "meta": {"n_ctx_train": 8192}}]});
        assert_eq!(
            context_from_models(&llama_server, "gpt-4o-mini"),
            Some((8192, "meta.n_ctx_train"))
        );
        let vllm = json!({"data": [{"id": "a", "max_model_len": 4096}, {"id": "b", "max_model_len": 32768}]});
        assert_eq!(
            context_from_models(&vllm, "b"),
            Some((32768, "max_model_len"))
        );
        assert_eq!(context_from_models(&vllm, "c"), None);
        let openrouter = json!({"data": [{"id": "x", "context_length": "128000"}]});
        assert_eq!(
            context_from_models(&openrouter, "x"),
            Some((128_000, "context_length"))
        );
        let openai = json!({"data": [{"id": "gpt-4o-mini", "object": "model"}]});
        assert_eq!(context_from_models(&openai, "gpt-4o-mini"), None);

        let props = json!({"default_generation_settings": {"n_ctx": 2048}});
        assert_eq!(
            context_from_props(&props),
            Some((2048, "n_ctx from /props"))
        );
        assert_eq!(context_from_props(&json!({"n_ctx": 0})), None);
    }
}
