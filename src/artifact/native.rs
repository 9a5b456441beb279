//! Native executables in an artifact: what machine each executable regular file was
//! built for, read from its first bytes while `pack` or `inspect` reads the file anyway
//! (no second read). A deploy refuses hosts of another architecture before any upload.

/// How many leading bytes tell an executable's format and machine (the ELF header up to
/// `e_machine`; Mach-O and PE need fewer).
pub const HEAD: usize = 20;

/// What a native executable was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Machine {
    /// A Linux/ELF executable for this architecture, named as `uname -m` names it
    /// (`x86_64`, `aarch64`, ...), or `ELF machine N` for one shipit does not name.
    Elf(String),
    MachO,
    Pe,
}

impl Machine {
    /// How a refusal names it: `a aarch64 ELF executable`, `a macOS (Mach-O) executable`.
    pub fn describe(&self) -> String {
        match self {
            Machine::Elf(arch) => format!("a {arch} ELF executable"),
            Machine::MachO => "a macOS (Mach-O) executable, not a Linux one".into(),
            Machine::Pe => "a Windows (PE) executable, not a Linux one".into(),
        }
    }

    /// Whether it runs on a host whose normalized `uname -m` is `arch`.
    pub fn runs_on(&self, arch: &str) -> bool {
        matches!(self, Machine::Elf(a) if a == arch)
    }
}

/// An executable regular file of the artifact and its machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Native {
    pub path: String,
    pub machine: Machine,
}

/// The machine of a file that starts with `head` (at least its first [`HEAD`] bytes when
/// it is that long); `None` for anything else (scripts, data).
pub fn sniff(head: &[u8]) -> Option<Machine> {
    if head.len() >= HEAD && head.starts_with(b"\x7fELF") {
        // EI_CLASS (1: 32-bit, 2: 64-bit), EI_DATA (1: little, 2: big endian).
        let (class, data) = (head[4], head[5]);
        let raw = [head[18], head[19]];
        let machine = match data {
            1 => u16::from_le_bytes(raw),
            2 => u16::from_be_bytes(raw),
            _ => return None,
        };
        let arch = match (machine, class) {
            (62, _) => "x86_64".to_owned(),
            (183, _) => "aarch64".to_owned(),
            (3, _) => "i686".to_owned(),
            (40, _) => "arm".to_owned(),
            (243, 2) => "riscv64".to_owned(),
            (243, _) => "riscv32".to_owned(),
            (n, _) => format!("ELF machine {n}"),
        };
        return Some(Machine::Elf(arch));
    }
    if head.len() >= 4 {
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if matches!(magic, 0xfeedfacf | 0xcffaedfe | 0xfeedface | 0xcefaedfe) {
            return Some(Machine::MachO);
        }
    }
    head.starts_with(b"MZ").then_some(Machine::Pe)
}

/// Keeps the first [`HEAD`] bytes of what passes through it.
#[derive(Debug, Default)]
pub struct Head(Vec<u8>);

impl Head {
    pub fn see(&mut self, data: &[u8]) {
        let want = HEAD.saturating_sub(self.0.len()).min(data.len());
        self.0.extend_from_slice(&data[..want]);
    }

    /// The file `path` (mode `mode`) as a native executable, if it is one: only files
    /// with an execute bit count.
    pub fn native(&self, path: &str, mode: u32) -> Option<Native> {
        if mode & 0o111 == 0 {
            return None;
        }
        Some(Native {
            path: path.to_owned(),
            machine: sniff(&self.0)?,
        })
    }
}

/// The normalized architecture of a `uname -m` answer: `amd64` is `x86_64`, `arm64` is
/// `aarch64`, `i386`..`i686` are `i686`, `armv7l` and the like are `arm`.
pub fn normalize_arch(uname_m: &str) -> String {
    let m = uname_m.trim();
    match m {
        "amd64" | "x64" => "x86_64".into(),
        "arm64" | "aarch64_be" => "aarch64".into(),
        "i386" | "i486" | "i586" | "i686" | "x86" => "i686".into(),
        _ if m.starts_with("armv") || m == "arm" => "arm".into(),
        _ => m.to_owned(),
    }
}

/// The Rust target to build for a host of `arch`, for a refusal's hint.
pub fn rust_target(arch: &str) -> String {
    match arch {
        "arm" => "armv7-unknown-linux-gnueabihf".into(),
        _ => format!("{arch}-unknown-linux-gnu"),
    }
}

/// Why a host of `arch` cannot run `native`, with what to do.
pub fn refusal(native: &Native, arch: &str) -> String {
    let target = rust_target(arch);
    let musl = target.replace("-gnu", "-musl");
    format!(
        "`{}` is {}; this host is {arch}: build for {target} (or {musl}), e.g. \
         `cargo build --release --target {target}`",
        native.path,
        native.machine.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte ELF header: class, data, e_machine as given.
    fn elf(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1;
        let m = if data == 2 {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn elf_headers_name_their_machine() {
        let cases = [
            (elf(2, 1, 62), "x86_64"),
            (elf(2, 1, 183), "aarch64"),
            (elf(1, 1, 3), "i686"),
            (elf(1, 1, 40), "arm"),
            (elf(2, 1, 243), "riscv64"),
            (elf(2, 2, 183), "aarch64"),
            (elf(2, 1, 9999), "ELF machine 9999"),
        ];
        for (header, arch) in cases {
            assert_eq!(sniff(&header), Some(Machine::Elf(arch.into())), "{arch}");
        }
        assert_eq!(sniff(&elf(2, 7, 62)), None, "a bad EI_DATA");
        assert_eq!(sniff(&elf(2, 1, 62)[..19]), None, "too short");
    }

    #[test]
    fn other_formats() {
        assert_eq!(sniff(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0]), Some(Machine::MachO));
        assert_eq!(sniff(&[0xfe, 0xed, 0xfa, 0xcf]), Some(Machine::MachO));
        assert_eq!(sniff(b"MZ\x90\0"), Some(Machine::Pe));
        assert_eq!(sniff(b"#!/bin/sh\necho hello world\n"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn only_executables_count_and_the_head_is_cut() {
        let mut head = Head::default();
        let header = elf(2, 1, 183);
        head.see(&header[..10]);
        head.see(&header[10..]);
        assert_eq!(head.0.len(), HEAD);
        assert_eq!(head.native("bin/hello", 0o644), None);
        let native = head.native("bin/hello", 0o755).unwrap();
        assert!(!native.machine.runs_on("x86_64"));
        assert!(native.machine.runs_on("aarch64"));
        assert_eq!(
            refusal(&native, "x86_64"),
            "`bin/hello` is a aarch64 ELF executable; this host is x86_64: build for \
             x86_64-unknown-linux-gnu (or x86_64-unknown-linux-musl), e.g. \
             `cargo build --release --target x86_64-unknown-linux-gnu`"
        );
    }

    #[test]
    fn uname_answers_are_normalized() {
        for (raw, arch) in [
            ("x86_64\n", "x86_64"),
            ("amd64", "x86_64"),
            ("arm64", "aarch64"),
            ("aarch64", "aarch64"),
            ("i586", "i686"),
            ("armv7l", "arm"),
            ("riscv64", "riscv64"),
        ] {
            assert_eq!(normalize_arch(raw), arch);
        }
    }
}
