//! The optimised preprocessing against the straightforward Pillow port it replaced (kept below,
//! unchanged, as `reference`): equal byte for byte on random sizes, random images and the golden
//! fixtures (always run), and its before/after timings (ignored; prints, never asserts):
//!
//!     cargo test --release --test it -- preprocess_speed --ignored --nocapture
//!
//! The reference is the resize written the way libImaging/Resample.c reads, one output value at a
//! time; the optimised code computes the same integer sums in another order, so any difference
//! here is a bug, not rounding.

use std::path::Path;
use std::time::Instant;

use sonoedge::capture::still::load_still;
use sonoedge::infer::{PreprocessSpec, Resample};
use sonoedge::preprocess::{ImageView, Layout, Preprocessor};

/// The resize and normalisation as they were before the speed work (src/preprocess at e47b53e).
mod reference {
    use sonoedge::infer::{PreprocessSpec, Resample};
    use sonoedge::preprocess::{ImageView, Layout};

    const PRECISION_BITS: u32 = 32 - 8 - 2;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Filter {
        Bilinear,
        Bicubic,
    }

    impl Filter {
        fn support(self) -> f64 {
            match self {
                Filter::Bilinear => 1.0,
                Filter::Bicubic => 2.0,
            }
        }

        fn weight(self, x: f64) -> f64 {
            let x = x.abs();
            match self {
                Filter::Bilinear => {
                    if x < 1.0 {
                        1.0 - x
                    } else {
                        0.0
                    }
                }
                Filter::Bicubic => {
                    const A: f64 = -0.5;
                    if x < 1.0 {
                        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                    } else if x < 2.0 {
                        (((x - 5.0) * x + 8.0) * x - 4.0) * A
                    } else {
                        0.0
                    }
                }
            }
        }
    }

    #[derive(Debug, Clone, Default)]
    struct Coeffs {
        bounds: Vec<(usize, usize)>,
        weights: Vec<i32>,
        ksize: usize,
    }

    impl Coeffs {
        fn new(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
            let scale = in_size as f64 / out_size as f64;
            let filterscale = scale.max(1.0);
            let support = filter.support() * filterscale;
            let ksize = support.ceil() as usize * 2 + 1;
            let mut c = Coeffs { bounds: Vec::with_capacity(out_size), weights: vec![0; out_size * ksize], ksize };
            let mut k = vec![0.0f64; ksize];
            for xx in 0..out_size {
                let center = (xx as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
                let ss = 1.0 / filterscale;
                let mut ww = 0.0;
                for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                    *kx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
                    ww += *kx;
                }
                for (x, kx) in k.iter().enumerate().take(xmax) {
                    let w = if ww != 0.0 { kx / ww } else { *kx };
                    c.weights[xx * ksize + x] = to_fixed(w);
                }
                c.bounds.push((xmin, xmax));
            }
            c
        }

        fn taps(&self, out: usize) -> (usize, &[i32]) {
            let (start, n) = self.bounds[out];
            (start, &self.weights[out * self.ksize..out * self.ksize + n])
        }
    }

    fn to_fixed(w: f64) -> i32 {
        let scaled = w * (1u32 << PRECISION_BITS) as f64;
        if w < 0.0 {
            (scaled - 0.5) as i32
        } else {
            (scaled + 0.5) as i32
        }
    }

    fn clip8(acc: i32) -> u8 {
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    pub struct Resampler {
        filter: Filter,
        channels: usize,
        out_w: usize,
        out_h: usize,
        in_size: (usize, usize),
        horiz: Coeffs,
        vert: Coeffs,
        temp: Vec<u8>,
        acc: Vec<i32>,
    }

    impl Resampler {
        fn new(filter: Filter, channels: usize, out_w: usize, out_h: usize) -> Resampler {
            Resampler {
                filter,
                channels,
                out_w,
                out_h,
                in_size: (0, 0),
                horiz: Coeffs::default(),
                vert: Coeffs::default(),
                temp: Vec::new(),
                acc: vec![0; out_w * channels],
            }
        }

        fn resize(&mut self, src: &[u8], in_w: usize, in_h: usize, dst: &mut [u8]) {
            let ch = self.channels;
            if (in_w, in_h) != self.in_size {
                self.horiz = Coeffs::new(in_w, self.out_w, self.filter);
                self.vert = Coeffs::new(in_h, self.out_h, self.filter);
                self.in_size = (in_w, in_h);
            }
            match (in_w != self.out_w, in_h != self.out_h) {
                (false, false) => dst.copy_from_slice(src),
                (true, false) => horizontal(src, in_w, &self.horiz, ch, 0..in_h, dst),
                (false, true) => vertical(src, in_w * ch, &self.vert, 0, &mut self.acc, dst),
                (true, true) => self.both(src, in_w, dst),
            }
        }

        fn both(&mut self, src: &[u8], in_w: usize, dst: &mut [u8]) {
            let first = self.vert.bounds[0].0;
            let (last_start, last_n) = *self.vert.bounds.last().expect("non-empty");
            let rows = first..last_start + last_n;
            let row_bytes = self.out_w * self.channels;
            self.temp.resize(rows.len() * row_bytes, 0);
            horizontal(src, in_w, &self.horiz, self.channels, rows, &mut self.temp);
            vertical(&self.temp, row_bytes, &self.vert, first, &mut self.acc, dst);
        }
    }

    fn horizontal(src: &[u8], in_w: usize, c: &Coeffs, ch: usize, rows: std::ops::Range<usize>, dst: &mut [u8]) {
        let out_row = c.bounds.len() * ch;
        for (y, out) in rows.zip(dst.chunks_exact_mut(out_row)) {
            let line = &src[y * in_w * ch..(y + 1) * in_w * ch];
            for (xx, px) in out.chunks_exact_mut(ch).enumerate() {
                let (start, w) = c.taps(xx);
                let taps = &line[start * ch..(start + w.len()) * ch];
                for (k, o) in px.iter_mut().enumerate() {
                    let acc = w.iter().zip(taps[k..].iter().step_by(ch)).fold(1i32 << (PRECISION_BITS - 1), |a, (w, p)| a + w * *p as i32);
                    *o = clip8(acc);
                }
            }
        }
    }

    fn vertical(src: &[u8], row_bytes: usize, c: &Coeffs, offset: usize, acc: &mut [i32], dst: &mut [u8]) {
        for (yy, out) in dst.chunks_exact_mut(row_bytes).enumerate() {
            let (start, w) = c.taps(yy);
            acc.fill(1 << (PRECISION_BITS - 1));
            for (i, wk) in w.iter().enumerate() {
                let row = &src[(start - offset + i) * row_bytes..][..row_bytes];
                acc.iter_mut().zip(row).for_each(|(a, p)| *a += wk * *p as i32);
            }
            out.iter_mut().zip(acc.iter()).for_each(|(o, a)| *o = clip8(*a));
        }
    }

    /// The old `Preprocessor`: resize to packed RGB, then `lut[c][u8]` into planar f32.
    pub struct Preprocess {
        rgb: Resampler,
        grey: Resampler,
        rgb_out: Vec<u8>,
        grey_out: Vec<u8>,
        lut: [[f32; 256]; 3],
    }

    impl Preprocess {
        pub fn new(spec: &PreprocessSpec) -> Preprocess {
            let filter = match spec.resample {
                Resample::Bilinear => Filter::Bilinear,
                Resample::Bicubic => Filter::Bicubic,
            };
            let (w, h) = (spec.width as usize, spec.height as usize);
            Preprocess {
                rgb: Resampler::new(filter, 3, w, h),
                grey: Resampler::new(filter, 1, w, h),
                rgb_out: vec![0; w * h * 3],
                grey_out: vec![0; w * h],
                lut: lookup_table(spec),
            }
        }

        pub fn resized_rgb(&self) -> &[u8] {
            &self.rgb_out
        }

        pub fn run(&mut self, image: ImageView<'_>, out: &mut [f32]) {
            let (w, h) = (image.width as usize, image.height as usize);
            match image.layout {
                Layout::Rgb8 => self.rgb.resize(image.data, w, h, &mut self.rgb_out),
                Layout::Grey8 => {
                    self.grey.resize(image.data, w, h, &mut self.grey_out);
                    for (v, px) in self.grey_out.iter().zip(self.rgb_out.chunks_exact_mut(3)) {
                        px.fill(*v);
                    }
                }
            }
            let plane = self.grey_out.len();
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in self.rgb_out.chunks_exact(3).enumerate() {
                r[i] = self.lut[0][px[0] as usize];
                g[i] = self.lut[1][px[1] as usize];
                b[i] = self.lut[2][px[2] as usize];
            }
        }
    }

    fn lookup_table(spec: &PreprocessSpec) -> [[f32; 256]; 3] {
        let rescale = spec.rescale.map(f64::from).unwrap_or(1.0);
        let (mean, std) = spec.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        std::array::from_fn(|c| {
            std::array::from_fn(|u| {
                let x = (u as f64 * rescale) as f32;
                if spec.normalize.is_some() {
                    (x - mean[c]) / std[c]
                } else {
                    x
                }
            })
        })
    }
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n
    }

    /// Pixels that are partly smooth, partly noise, partly saturated: clipping at 0 and 255 matters.
    fn image(&mut self, len: usize) -> Vec<u8> {
        let mode = self.below(3);
        (0..len)
            .map(|i| match mode {
                0 => (self.next() >> 56) as u8,
                1 => {
                    if self.next() >> 63 == 0 {
                        0
                    } else {
                        255
                    }
                }
                _ => ((i / 7) as u8).wrapping_mul(13) ^ ((self.next() >> 60) as u8),
            })
            .collect()
    }
}

fn spec(width: u32, height: u32, resample: Resample) -> PreprocessSpec {
    PreprocessSpec { width, height, resample, rescale: Some(1.0 / 255.0), normalize: Some(([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])) }
}

/// Runs both implementations on `image`; returns a description of the first difference.
fn compare(spec: &PreprocessSpec, image: ImageView<'_>, fast: &mut Preprocessor, slow: &mut reference::Preprocess) -> Result<(), String> {
    let mut ours = vec![f32::NAN; fast.output_len()];
    let mut theirs = vec![f32::NAN; fast.output_len()];
    fast.run(image, &mut ours).map_err(|e| e.to_string())?;
    slow.run(image, &mut theirs);
    let what = format!("{}x{} {:?} -> {}x{} {:?}", image.width, image.height, image.layout, spec.width, spec.height, spec.resample);
    if let Some(i) = fast.resized_rgb().iter().zip(slow.resized_rgb()).position(|(a, b)| a != b) {
        return Err(format!("{what}: resized byte {i} is {} instead of {}", fast.resized_rgb()[i], slow.resized_rgb()[i]));
    }
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a.to_bits() != b.to_bits()) {
        return Err(format!("{what}: tensor value {i} is {} instead of {}", ours[i], theirs[i]));
    }
    Ok(())
}

#[test]
fn fast_resize_equals_the_plain_pillow_port_byte_for_byte_on_random_sizes() {
    let mut noise = Noise(0x5eed_5ca1e);
    let mut failures = Vec::new();
    for case in 0..120 {
        let resample = if case % 2 == 0 { Resample::Bilinear } else { Resample::Bicubic };
        // Shrinking by up to ~9x (a 1920 ROI into 224), enlarging, and equal sides (one pass only).
        let out = (1 + noise.below(40), 1 + noise.below(40));
        let side = |n: &mut Noise, o: usize| match n.below(5) {
            0 => o,
            1 => 1 + n.below(o + 3),
            _ => 1 + n.below(9 * o + 20),
        };
        let inp = (side(&mut noise, out.0), side(&mut noise, out.1));
        let layout = if noise.below(4) == 0 { Layout::Grey8 } else { Layout::Rgb8 };
        let spec = spec(out.0 as u32, out.1 as u32, resample);
        let (mut fast, mut slow) = (Preprocessor::new(&spec), reference::Preprocess::new(&spec));
        // Two images per size: the second reuses the tables and buffers the first built.
        for _ in 0..2 {
            let data = noise.image(inp.0 * inp.1 * layout.bytes_per_pixel());
            let image = ImageView { width: inp.0 as u32, height: inp.1 as u32, layout, data: &data };
            if let Err(e) = compare(&spec, image, &mut fast, &mut slow) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn fast_resize_equals_the_plain_pillow_port_on_the_224_model_input_from_typical_rois() {
    let mut noise = Noise(42);
    for resample in [Resample::Bilinear, Resample::Bicubic] {
        let spec = spec(224, 224, resample);
        let (mut fast, mut slow) = (Preprocessor::new(&spec), reference::Preprocess::new(&spec));
        for (w, h) in [(736, 624), (1000, 800), (641, 479), (224, 1080), (1920, 224), (160, 120)] {
            let data = noise.image(w * h * 3);
            compare(&spec, ImageView { width: w as u32, height: h as u32, layout: Layout::Rgb8, data: &data }, &mut fast, &mut slow)
                .unwrap();
        }
    }
}

#[test]
fn fast_resize_equals_the_plain_pillow_port_on_the_golden_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "fixtures missing in {}", dir.display());
    for resample in [Resample::Bilinear, Resample::Bicubic] {
        let spec = spec(224, 224, resample);
        let (mut fast, mut slow) = (Preprocessor::new(&spec), reference::Preprocess::new(&spec));
        for file in &files {
            let still = load_still(file).unwrap();
            compare(&spec, still.view(), &mut fast, &mut slow).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

/// CPU time of this thread: time spent preempted by the other builds on a busy machine is not counted.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 * 1e-6
}

/// Per run of `f`, `runs` times: (thread CPU ms, wall ms), each as [median, p10, p90].
fn time_ms(runs: usize, mut f: impl FnMut()) -> ([f64; 3], [f64; 3]) {
    let (mut cpu, mut wall) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let (c, t) = (thread_cpu_ms(), Instant::now());
        f();
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(thread_cpu_ms() - c);
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        [v[runs / 2], v[runs / 10], v[runs * 9 / 10]]
    };
    (stats(cpu), stats(wall))
}

#[test]
#[ignore = "timing: cargo test --release --test it -- preprocess_speed --ignored --nocapture"]
fn print_preprocess_timings_before_and_after() {
    let runs: usize = std::env::var("SONOEDGE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let mut noise = Noise(7);
    println!("RGB ROI -> 224x224 f32 tensor, one thread, {runs} runs each; ms as median [p10 p90] of thread CPU time, then wall median");
    for (w, h) in [(736, 624), (1000, 800), (1280, 720), (1920, 1080)] {
        let data = noise.image(w * h * 3);
        let image = ImageView { width: w as u32, height: h as u32, layout: Layout::Rgb8, data: &data };
        for resample in [Resample::Bilinear, Resample::Bicubic] {
            let spec = spec(224, 224, resample);
            let (mut fast, mut slow) = (Preprocessor::new(&spec), reference::Preprocess::new(&spec));
            let mut out = vec![0.0; fast.output_len()];
            compare(&spec, image, &mut fast, &mut slow).unwrap();
            let (before, before_wall) = time_ms(runs, || slow.run(image, &mut out));
            let (after, after_wall) = time_ms(runs, || fast.run(image, &mut out).unwrap());
            let fmt = |t: [f64; 3], wall: [f64; 3]| format!("{:6.2} [{:5.2} {:5.2}] wall {:6.2}", t[0], t[1], t[2], wall[0]);
            let name = format!("{w}x{h} {resample:?}");
            println!("{name:<18} before {}   after {}   x{:.1}", fmt(before, before_wall), fmt(after, after_wall), before[0] / after[0]);
        }
    }
}
