//! The guest's init (PID 1): see `vmrun::init`.

fn main() {
    vmrun::init::main()
}
