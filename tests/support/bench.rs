//! What the benchmarks in `benches/` share: the parts chosen on the command line and a runtime.

/// The words after `--` that choose what to run (`cargo bench` passes `--bench`, no choice).
pub struct Chosen(Vec<String>);

impl Chosen {
    pub fn from_args() -> Chosen {
        Chosen(
            std::env::args()
                .skip(1)
                .filter(|arg| !arg.starts_with('-'))
                .collect(),
        )
    }

    /// Whether the part named `part` runs: all run when none is chosen.
    pub fn wants(&self, part: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|chosen| chosen == part)
    }

    /// Whether the scenario named `name` runs: one whose name contains a chosen word.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|chosen| name.contains(chosen.as_str()))
    }
}

/// A multi-threaded runtime for a benchmark's parts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// The CPUs this machine gives the benchmark.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
