//! Rebuilds when a translation changes: the Fluent files under `locales/` are compiled into the binary.

fn main() {
    println!("cargo:rerun-if-changed=locales");
}
