//! Test tool for the VM capture test (tests/vivid_vm.rs): sets one V4L2 control on a device, e.g. presses vivid's
//! `Disconnect` button (`v4l2_ctl /dev/video0 0x00f0f041`) to simulate an unplugged grabber.
//! Usage: v4l2_ctl DEVICE CONTROL_ID [VALUE]   (no VALUE = a button press)

use v4l::control::{Control, Value};
use v4l::Device;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} DEVICE CONTROL_ID [VALUE]", args[0]);
        std::process::exit(2);
    }
    let id = parse(&args[2]);
    let value = args.get(3).map_or(Value::None, |v| Value::Integer(parse(v) as i64));
    let result = Device::with_path(&args[1]).and_then(|d| d.set_control(Control { id, value }));
    if let Err(e) = result {
        eprintln!("{}: control {:#x}: {e}", args[1], id);
        std::process::exit(1);
    }
    println!("{}: control {:#x} set", args[1], id);
}

fn parse(s: &str) -> u32 {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|e| {
        eprintln!("{s}: not a number ({e})");
        std::process::exit(2)
    })
}
