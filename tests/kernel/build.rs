//! Links the kernel with `linker.ld` (by absolute path, so the build works
//! from any directory and whatever `RUSTFLAGS` the caller sets), and relinks
//! when the script changes.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
}
