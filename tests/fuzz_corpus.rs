//! The fuzz targets' corpus and every input the fuzzers found a fault with, run through the
//! same harness (`fuzz/harness.rs`) on stable Rust in every test run: a fault fixed stays
//! fixed, and the harness itself keeps compiling and running.

#[path = "../fuzz/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for (name, run) in harness::TARGETS {
        let mut files = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).expect("corpus file readable");
                run(&data);
                files += 1;
            }
        }
        assert!(files > 0, "the {name} target has a corpus");
        ran += files;
    }
    eprintln!("{ran} inputs ran clean");
}
