//! Leakage and duplicates: hashes of each evaluated image (of the file, of its decoded RGB pixels,
//! and a 64-bit difference hash for near copies), matched against a training list and against each
//! other. A model scored on images it was trained on, or on the same image twice, looks better
//! than it is; these are reported, with the figures recomputed without them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::capture::still::{load_still, Still};
use crate::preprocess::Layout;

/// Near duplicates: difference hashes at most this many bits apart.
pub const NEAR_HAMMING: u32 = 4;

/// The hashes of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    pub file_sha256: String,
    pub pixel_sha256: String,
    pub dhash: u64,
}

/// Hashes `path`: sha256 of the bytes, sha256 of the decoded pixels as 8-bit RGB rows (what
/// `models/training_list.py` computes with Pillow), and the dHash.
pub fn hash_file(path: &Path) -> anyhow::Result<Hashes> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let still = load_still(path)?;
    Ok(Hashes { file_sha256: hex(&Sha256::digest(&bytes)), pixel_sha256: hex(&Sha256::digest(rgb(&still))), dhash: dhash(&still) })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rgb(still: &Still) -> Vec<u8> {
    match still.layout {
        Layout::Grey8 => still.data.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => still.data.clone(),
    }
}

/// A difference hash: the grey image shrunk to 9x8 (box averages), one bit per horizontal
/// neighbour pair, set when the left pixel is brighter.
pub fn dhash(still: &Still) -> u64 {
    let bpp = still.layout.bytes_per_pixel();
    let (w, h) = (still.width as usize, still.height as usize);
    let mut cells = [[0.0f64; 9]; 8];
    for (cy, row) in cells.iter_mut().enumerate() {
        for (cx, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (cx * w / 9, ((cx + 1) * w / 9).max(cx * w / 9 + 1).min(w));
            let (y0, y1) = (cy * h / 8, ((cy + 1) * h / 8).max(cy * h / 8 + 1).min(h));
            let grey = |x: usize, y: usize| still.data[(y * w + x) * bpp..][..bpp].iter().map(|&v| f64::from(v)).sum::<f64>() / bpp as f64;
            let sum: f64 = (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).map(|(x, y)| grey(x, y)).sum();
            *cell = sum / ((x1 - x0) * (y1 - y0)) as f64;
        }
    }
    let bits = cells.iter().flat_map(|row| row.windows(2).map(|p| p[0] > p[1]));
    bits.enumerate().fold(0u64, |acc, (i, bit)| acc | (u64::from(bit) << i))
}

/// Groups of indices (two or more) holding the same image: exact (same pixels) or near (dHash
/// within [`NEAR_HAMMING`] bits); each group in index order, groups by their first index.
pub fn duplicate_groups(hashes: &[Hashes], near: bool) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..hashes.len()).collect();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, h) in hashes.iter().enumerate() {
        if let Some(&j) = first_of.get(h.pixel_sha256.as_str()) {
            union(&mut parent, i, j);
        } else {
            first_of.insert(&h.pixel_sha256, i);
        }
    }
    if near {
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                if (hashes[i].dhash ^ hashes[j].dhash).count_ones() <= NEAR_HAMMING {
                    union(&mut parent, i, j);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..hashes.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    parent[i] = r;
    r
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    parent[ra.max(rb)] = ra.min(rb);
}

/// Indices to drop so that one image (the first) of each group is kept.
pub fn extra_copies(groups: &[Vec<usize>]) -> HashSet<usize> {
    groups.iter().flat_map(|g| g[1..].iter().copied()).collect()
}

/// A training list: one lowercase hex sha256 per line (of a file or of its decoded pixels);
/// blank lines and `#` comments are skipped.
pub fn read_training_list(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read --training-list {}: {e}", path.display()))?;
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let hash = line.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
        anyhow::ensure!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}:{i}: expected a sha256 in hex; make the list with models/training_list.py",
            path.display()
        );
        set.insert(hash);
    }
    Ok(set)
}

/// Whether an image is in the training list, by its file or its pixels.
pub fn seen_in_training(h: &Hashes, training: &HashSet<String>) -> bool {
    training.contains(&h.file_sha256) || training.contains(&h.pixel_sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn still(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Still {
        let data = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect();
        Still { width: w, height: h, layout: Layout::Grey8, data }
    }

    fn hashes(pixel: &str, dhash: u64) -> Hashes {
        Hashes { file_sha256: String::new(), pixel_sha256: pixel.into(), dhash }
    }

    #[test]
    fn dhash_sees_a_brightness_change_as_the_same_image_and_a_mirror_as_another() {
        let a = still(90, 80, |x, y| ((x * 7 + y * 3) % 200) as u8);
        let brighter = still(90, 80, |x, y| ((x * 7 + y * 3) % 200) as u8 + 20);
        let mirrored = still(90, 80, |x, y| (((89 - x) * 7 + y * 3) % 200) as u8);
        assert!((dhash(&a) ^ dhash(&brighter)).count_ones() <= NEAR_HAMMING);
        assert!((dhash(&a) ^ dhash(&mirrored)).count_ones() > NEAR_HAMMING);
    }

    #[test]
    fn exact_and_near_copies_group_and_one_of_each_group_is_kept() {
        let h = [hashes("p", 0), hashes("q", u64::MAX), hashes("p", 0xFFFF_0000), hashes("r", 0b111), hashes("s", 0xF0F0_F0F0_F0F0)];
        assert_eq!(duplicate_groups(&h, false), [vec![0, 2]]);
        // 0 and 3 are 3 bits apart: near; 2 joins them through its exact copy of 0.
        assert_eq!(duplicate_groups(&h, true), [vec![0, 2, 3]]);
        assert_eq!(extra_copies(&duplicate_groups(&h, true)), HashSet::from([2, 3]));
    }

    #[test]
    fn a_grey_image_hashes_as_the_rgb_pillow_makes_of_it() {
        let grey = still(2, 1, |x, _| x as u8 * 100);
        assert_eq!(rgb(&grey), [0, 0, 0, 100, 100, 100]);
    }

    #[test]
    fn training_list_accepts_hex_lines_and_names_a_bad_one() {
        let dir = std::env::temp_dir().join(format!("sonoedge-trainlist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = format!("# made by training_list.py\n{}  benign/x.png\n\n", "AB".repeat(32));
        std::fs::write(dir.join("good"), good).unwrap();
        assert!(read_training_list(&dir.join("good")).unwrap().contains(&"ab".repeat(32)));
        std::fs::write(dir.join("bad"), "not-a-hash\n").unwrap();
        assert!(read_training_list(&dir.join("bad")).unwrap_err().to_string().contains(":1: expected a sha256"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
