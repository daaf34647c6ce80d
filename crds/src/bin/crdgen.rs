//! `crdgen`: writes emu-sriov's CRDs as YAML.
//!
//!   crdgen              print every CRD to stdout (one YAML document each)
//!   crdgen --dir DIR    write DIR/<plural>.<group>.yaml, one file per CRD
//!   crdgen --check DIR  exit 1 (saying which) when a file in DIR differs from what crdgen writes
//!
//! CI runs `--check crds` and the chart carries the same files.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => print_all(),
        ["--dir", dir] => write_dir(PathBuf::from(dir)),
        ["--check", dir] => check_dir(PathBuf::from(dir)),
        ["--help"] | ["-h"] => {
            println!("usage: crdgen [--dir DIR | --check DIR]\n\n  (no arguments)  print every emu-sriov CRD as YAML to stdout\n  --dir DIR       write DIR/<plural>.emu.sriov.yaml, one file per CRD\n  --check DIR     fail, naming the file, when DIR's CRDs differ from this build's\n                  (regenerate with: cargo run -p emu-sriov-crds --bin crdgen -- --dir crds)");
            Ok(())
        }
        _ => Err(format!("unknown arguments {args:?}: see crdgen --help")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rendered() -> Result<Vec<(String, String)>, String> {
    emu_sriov_crds::crds()
        .iter()
        .map(|crd| {
            let yaml = emu_sriov_crds::crd_yaml(crd).map_err(|e| format!("encoding a CRD: {e}"))?;
            Ok((emu_sriov_crds::crd_file_name(crd), yaml))
        })
        .collect()
}

fn print_all() -> Result<(), String> {
    for (_, yaml) in rendered()? {
        println!("---\n{yaml}");
    }
    Ok(())
}

fn write_dir(dir: PathBuf) -> Result<(), String> {
    for (name, yaml) in rendered()? {
        let path = dir.join(&name);
        std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn check_dir(dir: PathBuf) -> Result<(), String> {
    let mut stale = Vec::new();
    for (name, yaml) in rendered()? {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == yaml => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{} unreadable ({e})", path.display())),
        }
    }
    if stale.is_empty() {
        println!("crdgen: the CRDs in {} are up to date", dir.display());
        Ok(())
    } else {
        Err(format!(
            "{}; regenerate with `cargo run -p emu-sriov-crds --bin crdgen -- --dir {}` and commit",
            stale.join(", "),
            dir.display()
        ))
    }
}
