//! What the grabber's driver says about its input signal: the input's status flags
//! (`VIDIOC_ENUMINPUT` of the current input), the DV timings a digital input detects
//! (`VIDIOC_QUERY_DV_TIMINGS`: ENOLINK no signal, ENOLCK no lock, ERANGE out of range) and
//! `V4L2_EVENT_SOURCE_CHANGE`. Many HDMI grabbers keep delivering buffers (noise, a test screen)
//! while the cart sends nothing: only the driver can tell. A grabber without these ioctls reports
//! nothing here and is judged by its frames alone, as before.
//!
//! The decisions ([`judge`], [`status_reason`], [`dv_reason`]) are pure and unit-tested; the
//! ioctls below them are thin.

use std::io;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

use v4l::v4l2;
use v4l::v4l2::vidioc::_IOC_TYPE;
use v4l::v4l_sys::{self as sys, v4l2_dv_timings, v4l2_event, v4l2_event_subscription, v4l2_input};

/// How often the input status is asked for while frames flow (each check is two ioctls).
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Which input of a multi-input grabber to capture from (`[source] input`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    Index(u32),
    /// Matched against the driver's input names, case-insensitively.
    Name(String),
}

/// One input as the driver lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub index: u32,
    pub name: String,
    /// A digital input (HDMI, DVI, SDI) that detects DV timings.
    pub dv_timings: bool,
}

/// The geometry of detected DV timings: a change means the source changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub width: u32,
    pub height: u32,
    pub interlaced: bool,
    pub pixelclock: u64,
}

/// What one check of the input found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A signal (or nothing known against one).
    Present,
    /// The driver says there is no usable signal; the reason names what it said.
    Absent(String),
    /// The detected timings differ from the ones the stream was set up with.
    Changed(String),
}

/// The reason the status flags of `VIDIOC_ENUMINPUT` give for having no picture, if any.
pub fn status_reason(flags: u32) -> Option<&'static str> {
    const REASONS: [(u32, &str); 7] = [
        (sys::V4L2_IN_ST_NO_POWER, "no power"),
        (sys::V4L2_IN_ST_NO_SIGNAL, "no signal"),
        (sys::V4L2_IN_ST_NO_H_LOCK, "no horizontal lock"),
        (sys::V4L2_IN_ST_NO_V_LOCK, "no vertical lock"),
        (sys::V4L2_IN_ST_NO_STD_LOCK, "no standard lock"),
        (sys::V4L2_IN_ST_NO_SYNC, "no sync"),
        (sys::V4L2_IN_ST_NO_CARRIER, "no carrier"),
    ];
    REASONS.iter().find(|(bit, _)| flags & bit != 0).map(|(_, why)| *why)
}

/// The reason an errno of `VIDIOC_QUERY_DV_TIMINGS` gives; `None` for "not supported" and others.
pub fn dv_reason(errno: i32) -> Option<&'static str> {
    match errno {
        libc::ENOLINK => Some("no signal (no link)"),
        libc::ENOLCK => Some("no lock on the signal"),
        libc::ERANGE => Some("signal out of range"),
        _ => None,
    }
}

/// One check: the detected timings' answer (the more specific: no link, no lock, out of range),
/// then the status flags, then the detected timings against the ones in use.
pub fn judge(flags: Option<u32>, detected: Option<Result<Timings, i32>>, in_use: Option<Timings>) -> Verdict {
    if let Some(why) = detected.and_then(|d| d.err()).and_then(dv_reason) {
        return Verdict::Absent(format!("the grabber reports {why}"));
    }
    if let Some(why) = flags.and_then(status_reason) {
        return Verdict::Absent(format!("the grabber reports {why} on its input"));
    }
    match detected {
        Some(Ok(t)) if in_use.is_some_and(|u| u != t) => {
            Verdict::Changed(format!("the input signal changed to {}x{}{}", t.width, t.height, if t.interlaced { "i" } else { "p" }))
        }
        _ => Verdict::Present,
    }
}

/// Watches one open device's input: rate-limited checks, and the timings the stream uses.
pub struct Watch {
    fd: c_int,
    input: Option<Input>,
    in_use: Option<Timings>,
    next_check: Instant,
    last: Verdict,
}

impl Watch {
    /// Selects the input (`spec`, else the current one), sets the detected DV timings if they
    /// differ from the device's, and subscribes to source changes. Call before the format is set.
    pub fn open(fd: c_int, spec: Option<&InputSpec>) -> Result<Watch, String> {
        let input = match spec {
            Some(spec) => Some(select_input(fd, spec)?),
            None => current_input(fd).ok(),
        };
        let mut in_use = None;
        if input.as_ref().is_some_and(|i| i.dv_timings) {
            in_use = adopt_detected_timings(fd);
        }
        subscribe_source_change(fd);
        Ok(Watch { fd, input, in_use, next_check: Instant::now(), last: Verdict::Present })
    }

    pub fn input(&self) -> Option<&Input> {
        self.input.as_ref()
    }

    /// The verdict now; asks the driver at most every [`CHECK_EVERY`] (at once after `force`).
    pub fn check(&mut self, force: bool) -> &Verdict {
        let now = Instant::now();
        if force || now >= self.next_check {
            self.next_check = now + CHECK_EVERY;
            let flags = self.input.as_ref().and_then(|i| input_status(self.fd, i.index).ok());
            let dv = self.input.as_ref().filter(|i| i.dv_timings).map(|_| query_timings(self.fd));
            self.last = judge(flags, dv, self.in_use);
        }
        &self.last
    }
}

/// Sets the timings the input detects as the device's current ones (a no-op when they already
/// are); returns the timings in use afterwards, if the driver has any.
fn adopt_detected_timings(fd: c_int) -> Option<Timings> {
    let current = get_timings(fd).ok();
    let Ok(detected) = query_raw_timings(fd) else { return current.map(|t| timings_of(&t)) };
    if current.map(|t| timings_of(&t)) != Some(timings_of(&detected)) {
        let mut t = detected;
        // SAFETY: S_DV_TIMINGS reads (and may adjust) the v4l2_dv_timings we own.
        if let Err(e) = unsafe { v4l2::ioctl(fd, ioc(3, 87, size_of::<v4l2_dv_timings>()), &mut t as *mut _ as *mut c_void) } {
            log::warn!("cannot set the detected DV timings: {e}");
            return current.map(|t| timings_of(&t));
        }
        log::info!("input timings set to the detected {}x{}", timings_of(&t).width, timings_of(&t).height);
        return Some(timings_of(&t));
    }
    Some(timings_of(&detected))
}

fn select_input(fd: c_int, spec: &InputSpec) -> Result<Input, String> {
    let inputs = list_inputs(fd);
    let found = inputs.iter().find(|i| match spec {
        InputSpec::Index(n) => i.index == *n,
        InputSpec::Name(name) => i.name.eq_ignore_ascii_case(name.trim()),
    });
    let Some(input) = found.cloned() else {
        let names: Vec<String> = inputs.iter().map(|i| format!("{} \"{}\"", i.index, i.name)).collect();
        return Err(format!("source.input {spec:?} is not an input of this grabber (it has: {})", names.join(", ")));
    };
    let mut index = input.index as c_int;
    // SAFETY: S_INPUT reads the c_int we own.
    unsafe { v4l2::ioctl(fd, v4l2::vidioc::VIDIOC_S_INPUT, &mut index as *mut _ as *mut c_void) }
        .map_err(|e| format!("cannot select input {} \"{}\": {e}", input.index, input.name))?;
    Ok(input)
}

fn current_input(fd: c_int) -> io::Result<Input> {
    let mut index: c_int = 0;
    // SAFETY: G_INPUT fills the c_int we own.
    unsafe { v4l2::ioctl(fd, v4l2::vidioc::VIDIOC_G_INPUT, &mut index as *mut _ as *mut c_void)? };
    enum_input(fd, index as u32).map(|i| input_of(&i))
}

/// Every input the driver lists (at most 64).
pub fn list_inputs(fd: c_int) -> Vec<Input> {
    (0..64).map_while(|n| enum_input(fd, n).ok()).map(|i| input_of(&i)).collect()
}

fn input_status(fd: c_int, index: u32) -> io::Result<u32> {
    enum_input(fd, index).map(|i| i.status)
}

fn enum_input(fd: c_int, index: u32) -> io::Result<v4l2_input> {
    // SAFETY: v4l2_input is plain old data; all-zero is a valid value.
    let mut input: v4l2_input = unsafe { std::mem::zeroed() };
    input.index = index;
    // SAFETY: ENUMINPUT reads the index and fills the v4l2_input we own.
    unsafe { v4l2::ioctl(fd, v4l2::vidioc::VIDIOC_ENUMINPUT, &mut input as *mut _ as *mut c_void)? };
    Ok(input)
}

fn input_of(i: &v4l2_input) -> Input {
    let end = i.name.iter().position(|&b| b == 0).unwrap_or(i.name.len());
    let name = String::from_utf8_lossy(&i.name[..end]).into_owned();
    Input { index: i.index, name, dv_timings: i.capabilities & sys::V4L2_IN_CAP_DV_TIMINGS != 0 }
}

/// The detected timings, or the errno the driver answered with.
fn query_timings(fd: c_int) -> Result<Timings, i32> {
    query_raw_timings(fd).map(|t| timings_of(&t)).map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn query_raw_timings(fd: c_int) -> io::Result<v4l2_dv_timings> {
    // SAFETY: v4l2_dv_timings is plain old data; all-zero is a valid value.
    let mut t: v4l2_dv_timings = unsafe { std::mem::zeroed() };
    // SAFETY: QUERY_DV_TIMINGS fills the v4l2_dv_timings we own.
    unsafe { v4l2::ioctl(fd, ioc(2, 99, size_of::<v4l2_dv_timings>()), &mut t as *mut _ as *mut c_void)? };
    Ok(t)
}

fn get_timings(fd: c_int) -> io::Result<v4l2_dv_timings> {
    // SAFETY: v4l2_dv_timings is plain old data; all-zero is a valid value.
    let mut t: v4l2_dv_timings = unsafe { std::mem::zeroed() };
    // SAFETY: G_DV_TIMINGS fills the v4l2_dv_timings we own.
    unsafe { v4l2::ioctl(fd, ioc(3, 88, size_of::<v4l2_dv_timings>()), &mut t as *mut _ as *mut c_void)? };
    Ok(t)
}

fn timings_of(t: &v4l2_dv_timings) -> Timings {
    // SAFETY: `bt` is the union member of V4L2_DV_BT_656_1120, the only timings type there is;
    // the struct is packed, so the member is copied out before its fields are read.
    let bt = unsafe { t.__bindgen_anon_1.bt };
    let (width, height, interlaced, pixelclock) = (bt.width, bt.height, bt.interlaced, bt.pixelclock);
    Timings { width, height, interlaced: interlaced != 0, pixelclock }
}

fn subscribe_source_change(fd: c_int) {
    // SAFETY: v4l2_event_subscription is plain old data; all-zero is a valid value.
    let mut sub: v4l2_event_subscription = unsafe { std::mem::zeroed() };
    sub.type_ = sys::V4L2_EVENT_SOURCE_CHANGE;
    // SAFETY: SUBSCRIBE_EVENT reads the subscription we own.
    let subscribed = unsafe { v4l2::ioctl(fd, ioc(1, 90, size_of::<v4l2_event_subscription>()), &mut sub as *mut _ as *mut c_void) };
    if let Err(e) = subscribed {
        log::debug!("no source-change events from this grabber ({e}); its input is polled instead");
    }
}

/// Takes every pending event; true if one of them was a resolution change of the source.
pub fn take_source_change(fd: c_int) -> bool {
    let mut changed = false;
    for _ in 0..16 {
        // SAFETY: v4l2_event is plain old data; all-zero is a valid value.
        let mut ev: v4l2_event = unsafe { std::mem::zeroed() };
        // SAFETY: DQEVENT fills the v4l2_event we own.
        if unsafe { v4l2::ioctl(fd, ioc(2, 89, size_of::<v4l2_event>()), &mut ev as *mut _ as *mut c_void) }.is_err() {
            break;
        }
        // SAFETY: `src_change` is the union member of a V4L2_EVENT_SOURCE_CHANGE event.
        let changes = if ev.type_ == sys::V4L2_EVENT_SOURCE_CHANGE { unsafe { ev.u.src_change.changes } } else { 0 };
        changed |= changes & sys::V4L2_EVENT_SRC_CH_RESOLUTION != 0;
        if ev.pending == 0 {
            break;
        }
    }
    changed
}

/// An ioctl request number of type 'V' (linux/ioctl.h): `dir` 1 write, 2 read, 3 both.
fn ioc(dir: u32, nr: u32, size: usize) -> _IOC_TYPE {
    ((dir as _IOC_TYPE) << 30) | ((size as _IOC_TYPE) << 16) | ((b'V' as _IOC_TYPE) << 8) | nr as _IOC_TYPE
}

fn size_of<T>() -> usize {
    std::mem::size_of::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HD: Timings = Timings { width: 1920, height: 1080, interlaced: false, pixelclock: 148_500_000 };
    const SD: Timings = Timings { width: 720, height: 576, interlaced: true, pixelclock: 27_000_000 };

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // linux/videodev2.h on a 64-bit kernel; the sizes are those of the structs.
        assert_eq!(ioc(2, 99, 132), 0x8084_5663, "VIDIOC_QUERY_DV_TIMINGS");
        assert_eq!(ioc(3, 87, 132), 0xC084_5657, "VIDIOC_S_DV_TIMINGS");
        assert_eq!(ioc(1, 90, 32), 0x4020_565A, "VIDIOC_SUBSCRIBE_EVENT");
        assert_eq!(size_of::<v4l2_dv_timings>(), 132);
        assert_eq!(size_of::<v4l2_event_subscription>(), 32);
    }

    #[test]
    fn status_flags_name_the_first_reason_for_no_picture() {
        assert_eq!(status_reason(0), None);
        assert_eq!(status_reason(sys::V4L2_IN_ST_HFLIP), None, "a flip is not a missing picture");
        assert_eq!(status_reason(sys::V4L2_IN_ST_NO_SIGNAL | sys::V4L2_IN_ST_NO_H_LOCK), Some("no signal"));
        assert_eq!(status_reason(sys::V4L2_IN_ST_NO_H_LOCK), Some("no horizontal lock"));
    }

    #[test]
    fn dv_query_errors_are_no_signal_no_lock_and_out_of_range_and_others_are_unknown() {
        assert_eq!(judge(None, Some(Err(libc::ENOLINK)), Some(HD)), Verdict::Absent("the grabber reports no signal (no link)".into()));
        assert!(matches!(judge(None, Some(Err(libc::ENOLCK)), Some(HD)), Verdict::Absent(w) if w.contains("no lock")));
        assert!(matches!(judge(None, Some(Err(libc::ERANGE)), None), Verdict::Absent(w) if w.contains("out of range")));
        assert_eq!(judge(None, Some(Err(libc::ENOTTY)), Some(HD)), Verdict::Present, "a grabber without the ioctl is judged by its frames");
    }

    #[test]
    fn timings_that_differ_from_the_ones_in_use_are_a_source_change() {
        assert_eq!(judge(Some(0), Some(Ok(HD)), Some(HD)), Verdict::Present);
        assert_eq!(judge(Some(0), Some(Ok(SD)), Some(HD)), Verdict::Changed("the input signal changed to 720x576i".into()));
        assert_eq!(judge(Some(0), Some(Ok(SD)), None), Verdict::Present, "nothing in use to compare with");
    }

    #[test]
    fn status_flags_win_over_detected_timings() {
        let v = judge(Some(sys::V4L2_IN_ST_NO_SIGNAL), Some(Ok(SD)), Some(HD));
        assert_eq!(v, Verdict::Absent("the grabber reports no signal on its input".into()));
    }

    #[test]
    fn the_timings_query_names_the_fault_more_precisely_than_the_flags() {
        let v = judge(Some(sys::V4L2_IN_ST_NO_H_LOCK), Some(Err(libc::ERANGE)), Some(HD));
        assert_eq!(v, Verdict::Absent("the grabber reports signal out of range".into()));
    }
}
