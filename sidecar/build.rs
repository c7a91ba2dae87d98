//! Rebuild when the console's files change (rust-embed reads them at compile time; a file
//! added to the folder, such as `make console`'s wasm output, would not be noticed otherwise).

fn main() {
    println!("cargo:rerun-if-changed=../console/web");
}
