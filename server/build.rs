fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; a new migration file alone
    // must rebuild the crate (sqlx's advice for the macro on stable Rust).
    println!("cargo:rerun-if-changed=migrations");
}
