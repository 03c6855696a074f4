//! Embeds the search console (`console/dist`, built from npm packages by
//! `scripts/console_build`, which `scripts/setup` runs) into the binary.
//! Without a build, `GET /` answers a page that says how to make one.

use std::path::Path;

const FILES: &[&str] = &["index.html", "app.js", "app.css"];

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    for f in FILES {
        println!("cargo:rerun-if-changed={}", dist.join(f).display());
    }
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("console.rs");
    let built = FILES.iter().all(|f| dist.join(f).is_file());
    let code = if built {
        let file = |f: &str| format!("include_bytes!({:?})", dist.join(f).display().to_string());
        format!(
            "/// The console's files, as built.\npub const CONSOLE: Option<Console> = Some(Console {{ index: {}, js: {}, css: {} }});\n",
            file("index.html"),
            file("app.js"),
            file("app.css")
        )
    } else {
        "/// No console was built into this binary.\npub const CONSOLE: Option<Console> = None;\n"
            .to_owned()
    };
    std::fs::write(out, code).expect("write console.rs");
}
