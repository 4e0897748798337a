pub mod keygen;
pub mod spec;
