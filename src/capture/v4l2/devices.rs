//! Finding V4L2 capture devices: resolving the configured name (a path, a /dev/v4l/by-id link, or a
//! match on card name or bus info) to a node, and listing every capture device with its formats,
//! sizes and frame rates for `sonoedge devices`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::negotiate::{fourcc_str, pixel_format};

/// How the configuration names the grabber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `/dev/video0` or a stable link such as `/dev/v4l/by-id/usb-...-video-index0`.
    Path(PathBuf),
    /// `card:NAME`: the capture device whose card name is NAME.
    Card(String),
    /// `bus:INFO`: the capture device whose bus info is INFO (e.g. `usb-0000:01:00.0-1.2`).
    Bus(String),
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        if let Some(card) = s.strip_prefix("card:") {
            return Ok(DeviceSpec::Card(card.to_string()));
        }
        if let Some(bus) = s.strip_prefix("bus:") {
            return Ok(DeviceSpec::Bus(bus.to_string()));
        }
        if s.starts_with('/') {
            return Ok(DeviceSpec::Path(PathBuf::from(s)));
        }
        Err(format!("`{s}` is neither a device path (/dev/video0, /dev/v4l/by-id/...) nor card:NAME nor bus:INFO"))
    }

    /// The device node this names right now (by-id links are followed again at every reopen).
    pub fn resolve(&self) -> Result<PathBuf, String> {
        match self {
            DeviceSpec::Path(p) => std::fs::canonicalize(p)
                .map_err(|e| format!("{}: {e} (is the grabber plugged in? `sonoedge devices` lists what is there)", p.display())),
            DeviceSpec::Card(name) => find(|c| c.card == *name)
                .ok_or_else(|| format!("no capture device with card name `{name}` (`sonoedge devices` lists them)")),
            DeviceSpec::Bus(bus) => {
                find(|c| c.bus == *bus).ok_or_else(|| format!("no capture device on bus `{bus}` (`sonoedge devices` lists them)"))
            }
        }
    }
}

fn find(matches: impl Fn(&v4l::Capabilities) -> bool) -> Option<PathBuf> {
    video_nodes().into_iter().find(|p| capture_caps(p).is_some_and(|c| matches(&c)))
}

/// /dev/video* in numeric order.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The capabilities of a node if it is a single-planar video capture device.
fn capture_caps(node: &Path) -> Option<v4l::Capabilities> {
    let caps = Device::with_path(node).ok()?.query_caps().ok()?;
    caps.capabilities.contains(v4l::capability::Flags::VIDEO_CAPTURE).then_some(caps)
}

/// One capture device, as `sonoedge devices --json` prints it.
#[derive(Debug, Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Stable links under /dev/v4l/by-id and /dev/v4l/by-path pointing at this node.
    pub aliases: Vec<PathBuf>,
    pub formats: Vec<FormatInfo>,
}

#[derive(Debug, Serialize)]
pub struct FormatInfo {
    pub fourcc: String,
    pub description: String,
    /// True if sonoedge converts this format.
    pub supported: bool,
    pub sizes: Vec<SizeInfo>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SizeInfo {
    Discrete { width: u32, height: u32, intervals: Vec<IntervalInfo> },
    Stepwise { min_width: u32, max_width: u32, step_width: u32, min_height: u32, max_height: u32, step_height: u32 },
}

/// A frame interval as the driver gives it, e.g. `1001/30000` s (29.97 fps).
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IntervalInfo {
    Discrete { interval: String, fps: f64 },
    Stepwise { min: String, max: String, step: String },
}

/// Every capture device present now.
pub fn list() -> Vec<DeviceInfo> {
    video_nodes().into_iter().filter_map(|p| describe(&p)).collect()
}

fn describe(node: &Path) -> Option<DeviceInfo> {
    let caps = capture_caps(node)?;
    let dev = Device::with_path(node).ok()?;
    let formats = dev
        .enum_formats()
        .unwrap_or_default()
        .into_iter()
        .map(|d| FormatInfo {
            fourcc: fourcc_str(&d.fourcc.repr),
            description: d.description.clone(),
            supported: pixel_format(&d.fourcc.repr).is_some(),
            sizes: sizes(&dev, d.fourcc),
        })
        .collect();
    Some(DeviceInfo { path: node.to_path_buf(), driver: caps.driver, card: caps.card, bus: caps.bus, aliases: aliases(node), formats })
}

fn sizes(dev: &Device, fourcc: FourCC) -> Vec<SizeInfo> {
    dev.enum_framesizes(fourcc)
        .unwrap_or_default()
        .into_iter()
        .map(|s| match s.size {
            FrameSizeEnum::Discrete(d) => {
                SizeInfo::Discrete { width: d.width, height: d.height, intervals: intervals(dev, fourcc, d.width, d.height) }
            }
            FrameSizeEnum::Stepwise(s) => SizeInfo::Stepwise {
                min_width: s.min_width,
                max_width: s.max_width,
                step_width: s.step_width,
                min_height: s.min_height,
                max_height: s.max_height,
                step_height: s.step_height,
            },
        })
        .collect()
}

fn intervals(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> Vec<IntervalInfo> {
    let frac = |f: v4l::Fraction| format!("{}/{}", f.numerator, f.denominator);
    dev.enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .into_iter()
        .map(|i| match i.interval {
            FrameIntervalEnum::Discrete(f) => IntervalInfo::Discrete { interval: frac(f), fps: fps(f) },
            FrameIntervalEnum::Stepwise(s) => IntervalInfo::Stepwise { min: frac(s.min), max: frac(s.max), step: frac(s.step) },
        })
        .collect()
}

fn fps(f: v4l::Fraction) -> f64 {
    if f.numerator == 0 {
        0.0
    } else {
        (f.denominator as f64 / f.numerator as f64 * 1000.0).round() / 1000.0
    }
}

fn aliases(node: &Path) -> Vec<PathBuf> {
    ["/dev/v4l/by-id", "/dev/v4l/by-path"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| std::fs::canonicalize(p).is_ok_and(|t| t == node))
        .collect()
}

/// The human-readable table of `sonoedge devices`.
pub fn table(devices: &[DeviceInfo]) -> String {
    let mut out = String::new();
    if devices.is_empty() {
        out.push_str("no V4L2 capture devices (/dev/video*); is the grabber plugged in, and is this user in group `video`?\n");
    }
    for d in devices {
        out.push_str(&format!("{}  driver {}  card \"{}\"  bus {}\n", d.path.display(), d.driver, d.card, d.bus));
        for a in &d.aliases {
            out.push_str(&format!("  alias {}\n", a.display()));
        }
        for f in &d.formats {
            let mark = if f.supported { "" } else { "  (not converted by sonoedge)" };
            out.push_str(&format!("  {} {}{mark}\n", f.fourcc, f.description));
            for s in &f.sizes {
                out.push_str(&format!("    {}\n", size_line(s)));
            }
        }
    }
    out
}

fn size_line(s: &SizeInfo) -> String {
    match s {
        SizeInfo::Discrete { width, height, intervals } => {
            let rates: Vec<String> = intervals
                .iter()
                .map(|i| match i {
                    IntervalInfo::Discrete { interval, fps } => format!("{fps} fps ({interval})"),
                    IntervalInfo::Stepwise { min, max, step } => format!("interval {min}..{max} step {step}"),
                })
                .collect();
            format!("{width}x{height}: {}", rates.join(", "))
        }
        SizeInfo::Stepwise { min_width, max_width, step_width, min_height, max_height, step_height } => {
            format!("{min_width}..{max_width} step {step_width} x {min_height}..{max_height} step {step_height}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(DeviceSpec::parse("/dev/video0"), Ok(DeviceSpec::Path("/dev/video0".into())));
        assert_eq!(DeviceSpec::parse("card:USB3.0 Capture"), Ok(DeviceSpec::Card("USB3.0 Capture".into())));
        assert_eq!(DeviceSpec::parse("bus:usb-1.2"), Ok(DeviceSpec::Bus("usb-1.2".into())));
        assert!(DeviceSpec::parse("video0").unwrap_err().contains("card:NAME"));
    }

    #[test]
    fn an_absent_device_says_what_to_check() {
        let e = DeviceSpec::parse("/dev/v4l/by-id/no-such-grabber").unwrap().resolve().unwrap_err();
        assert!(e.contains("plugged in"), "{e}");
    }
}
