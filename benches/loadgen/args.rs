//! The command line of the bench binaries (`load`, `soak`): `--flag value` pairs and bare
//! `--switch`es, after cargo's own `--bench`.

/// The arguments after the program name, without cargo's `--bench`.
pub struct Argv(Vec<String>);

impl Argv {
    /// This process's arguments.
    pub fn from_env() -> Argv {
        Argv(
            std::env::args()
                .skip(1)
                .filter(|a| a != "--bench")
                .collect(),
        )
    }

    /// The value after `flag`, if given.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    /// The number after `flag`, if given; an error names a value that is not a number.
    pub fn number(&self, flag: &str) -> Result<Option<f64>, String> {
        self.value(flag)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{flag} takes a number, not {v}"))
            })
            .transpose()
    }

    /// Whether the switch `flag` is given.
    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }
}
