//! The build script of every function crate (and of the bare baseline): links its binary as a
//! position-dependent executable (`-no-pie`).
//!
//! A position-independent executable is relocated by the dynamic loader at every start: about
//! 100,000 relative relocations for a function that links the AWS SDK, which write to (and so
//! fault in) some 900 pages before `main` runs, 1.5 ms of a 4 ms cold start on the bench. A
//! position-dependent one is loaded as linked. The trade-off: the executable's own image is not
//! placed at a random address (the heap, the stack and the shared libraries still are), as with
//! Go's default build on Linux; each Lambda sandbox runs one process of one function.
//! `README.md` (Cold start) has the figures.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
