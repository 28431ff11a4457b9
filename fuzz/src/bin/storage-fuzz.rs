//! The libFuzzer binary of every target: `STORAGE_FUZZ_TARGET` names the target,
//! `STORAGE_FUZZ_SCRATCH` the directory its scratch areas go in; with `STORAGE_FUZZ_LIST`
//! set it prints `name<TAB>max_len<TAB>about` for each target and exits. Built and run by
//! `cargo xtask fuzz`.
#![no_main]

use std::sync::{Mutex, OnceLock};

use storage_fuzz::{Scratch, TARGETS, Target, find};

static STATE: OnceLock<(&'static Target, Mutex<Scratch>)> = OnceLock::new();

fn init() {
    if std::env::var_os("STORAGE_FUZZ_LIST").is_some() {
        for t in TARGETS {
            println!("{}\t{}\t{}", t.name, t.max_len, t.about);
        }
        std::process::exit(0);
    }
    let name = std::env::var("STORAGE_FUZZ_TARGET").unwrap_or_default();
    let Some(target) = find(&name) else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "storage-fuzz: STORAGE_FUZZ_TARGET={name:?} is not one of {}",
            names.join(", ")
        );
        std::process::exit(2);
    };
    let base = std::env::var_os("STORAGE_FUZZ_SCRATCH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("storage-fuzz"));
    let _ = STATE.set((target, Mutex::new(Scratch::new(&base))));
}

libfuzzer_sys::fuzz_target!(init: init(), |data: &[u8]| {
    if let Some((target, scratch)) = STATE.get() {
        let mut scratch = scratch.lock().unwrap_or_else(|p| p.into_inner());
        (target.run)(&mut scratch, data);
    }
});
