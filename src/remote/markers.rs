//! The `@@` answer markers scripts print on stdout, and their parsers.

/// The step a script has reached: `@@step <name>`.
pub fn step(line: &str) -> Option<&str> {
    line.strip_prefix("@@step ")
}

/// A line of the protocol (not output to show).
pub fn is_protocol(line: &str) -> bool {
    line.starts_with("@@")
}

/// Why the host turned a delta down (`@@delta-mismatch <why>`), if it did.
pub fn delta_mismatch(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("@@delta-mismatch "))
        .map(|why| why.trim().to_owned())
}

/// Whether the activate script switched `current` (`@@switched`).
pub fn switched(stdout: &str) -> bool {
    stdout.contains("@@switched")
}

/// The warnings a script reported (`@@warn <text>`).
pub fn warnings(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@warn "))
        .map(str::to_owned)
        .collect()
}

/// Whether `unlock`'s forced release removed a lock (`@@unlocked`, not `@@unlocked none`).
pub fn unlocked(stdout: &str) -> bool {
    stdout.contains("@@unlocked\n")
}
