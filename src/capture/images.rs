//! Replays image files (a folder, sorted by name, or one file) at a fixed rate, looping or once.
//! Each file is decoded when it is due, so a replay allocates per frame; live sources do not.
//! Decoding runs under [`StillLimits`] (by default [`frame_limits`]: within the largest frame the
//! pipeline takes): a file over them is a corrupt frame (skipped and counted), so no frame this
//! source hands out is larger than the limits, nor is the pipeline's frame pool.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::still::{load_still_with, Still, StillLimits};
use super::{CaptureError, ColorSpace, FieldOrder, Frame, FrameMeta, FrameSource, PixelFormat, Range};
use crate::config::{MAX_FRAME_HEIGHT, MAX_FRAME_WIDTH};
use crate::preprocess::Layout;

pub struct ImageSource {
    path: PathBuf,
    files: Vec<PathBuf>,
    interval: Duration,
    looping: bool,
    next_at: Instant,
    index: u64,
    ended: bool,
    current: Option<Still>,
    limits: StillLimits,
}

impl ImageSource {
    pub fn new(path: PathBuf, fps: f64, looping: bool) -> ImageSource {
        ImageSource {
            path,
            files: Vec::new(),
            interval: Duration::from_secs_f64(1.0 / fps),
            looping,
            next_at: Instant::now(),
            index: 0,
            ended: false,
            current: None,
            limits: frame_limits(),
        }
    }

    /// The bounds each file is decoded within (default: [`frame_limits`]).
    pub fn with_limits(mut self, limits: StillLimits) -> ImageSource {
        self.limits = limits;
        self
    }

    /// Lists the files; an absent or empty folder is "unavailable" (retried), not fatal.
    fn scan(&mut self) -> Result<(), CaptureError> {
        let unavailable = |why: String| CaptureError::Unavailable(why);
        if self.path.is_file() {
            self.files = vec![self.path.clone()];
            return Ok(());
        }
        let entries =
            std::fs::read_dir(&self.path).map_err(|e| unavailable(format!("cannot read image folder {}: {e}", self.path.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(unavailable(format!("no PNG/JPEG/BMP images in {}", self.path.display())));
        }
        self.files = files;
        Ok(())
    }

    fn wait_until_due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_at {
            std::thread::sleep((self.next_at - now).min(Duration::from_millis(200)));
            return Instant::now() >= self.next_at;
        }
        true
    }
}

/// [`StillLimits::default`] within the largest frame the pipeline takes, so a larger image is
/// refused from its header (a corrupt frame) instead of decoded, then refused by the converter.
pub fn frame_limits() -> StillLimits {
    StillLimits { max_width: MAX_FRAME_WIDTH, max_height: MAX_FRAME_HEIGHT, ..StillLimits::default() }
}

impl FrameSource for ImageSource {
    fn describe(&self) -> String {
        format!("images {}", self.path.display())
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.files.is_empty() {
            self.scan()?;
        }
        if self.ended || !self.wait_until_due() {
            return Ok(None);
        }
        // A late reader does not get a burst of overdue frames (states and freezes are timed): the
        // next file is due one interval after this one, and a slow replay runs slower, frame by frame.
        self.next_at = self.next_at.max(Instant::now()) + self.interval;
        let n = self.files.len() as u64;
        if !self.looping && self.index >= n {
            self.ended = true;
            return Ok(None);
        }
        let path = &self.files[(self.index % n) as usize];
        let sequence = self.index;
        self.index += 1;
        // The previous image is dropped first, so two images are never held at once.
        self.current = None;
        // The error names the file already.
        let still = load_still_with(path, &self.limits).map_err(|e| CaptureError::Corrupt(e.to_string()))?;
        let still = self.current.insert(still);
        let (format, bpp) = match still.layout {
            Layout::Rgb8 => (PixelFormat::Rgb24, 3),
            Layout::Grey8 => (PixelFormat::Grey, 1),
        };
        let meta = FrameMeta {
            width: still.width,
            height: still.height,
            format,
            stride: still.width as usize * bpp,
            color_space: ColorSpace::Bt709,
            range: Range::Full,
            field: FieldOrder::Progressive,
            sequence,
            monotonic: super::monotonic_now(),
            wall: SystemTime::now(),
        };
        Ok(Some(Frame { meta, data: &still.data }))
    }

    fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reader_gets_no_burst_of_overdue_frames() {
        let dir = std::env::temp_dir().join(format!("sonoedge-images-pace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        image::GrayImage::new(8, 8).save(dir.join("a.png")).unwrap();
        let interval = Duration::from_millis(40);
        let mut s = ImageSource::new(dir, 25.0, true);
        let mut at = Vec::new();
        for i in 0..8 {
            s.next_frame().unwrap().expect("a looping replay always has a frame");
            at.push(Instant::now());
            // The first reads are slow (a busy pipeline), the rest immediate.
            if i < 3 {
                std::thread::sleep(4 * interval);
            }
        }
        for (i, w) in at.windows(2).enumerate() {
            // Slower (a loaded machine, qemu) only adds to the gap (less a decode's jitter); a catch-up
            // burst would make it ~0.
            assert!(w[1] - w[0] >= interval * 3 / 4, "frames {i} and {} {:?} apart", i + 1, w[1] - w[0]);
        }
    }

    #[test]
    fn a_missing_folder_is_unavailable_not_fatal() {
        let mut s = ImageSource::new("/nonexistent/sonoedge".into(), 100.0, true);
        assert!(matches!(s.next_frame(), Err(CaptureError::Unavailable(_))));
    }

    #[test]
    fn an_image_over_the_limits_is_a_corrupt_frame_and_the_replay_goes_on() {
        let dir = std::env::temp_dir().join(format!("sonoedge-images-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        image::GrayImage::new(16, 8).save(dir.join("a.png")).unwrap();
        image::GrayImage::new(40, 8).save(dir.join("b.png")).unwrap();
        let limits = StillLimits { max_width: 32, max_height: 32, ..StillLimits::default() };
        let mut s = ImageSource::new(dir.clone(), 1000.0, true).with_limits(limits);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(match s.next_frame() {
                Ok(Some(f)) => format!("{}x{}", f.meta.width, f.meta.height),
                Err(CaptureError::Corrupt(why)) => {
                    assert!(why.contains("b.png") && why.contains("32x32"), "{why}");
                    "corrupt".into()
                }
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(seen, ["16x8", "corrupt", "16x8", "corrupt"]);
    }

    #[test]
    fn by_default_an_image_wider_than_the_largest_frame_is_refused_from_its_header() {
        let dir = std::env::temp_dir().join(format!("sonoedge-images-frame-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wide.png");
        std::fs::write(&file, crate::capture::still::tests::png_bomb(MAX_FRAME_WIDTH + 1, 16)).unwrap();
        let mut s = ImageSource::new(file, 1000.0, true);
        let Err(CaptureError::Corrupt(why)) = s.next_frame() else { panic!("a {}-pixel-wide image was decoded", MAX_FRAME_WIDTH + 1) };
        assert!(why.contains("7681x16") && why.contains("7680x4320"), "{why}");
    }
}
