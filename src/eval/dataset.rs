//! The evaluated set: an ImageFolder (one subfolder per label) or a CSV manifest (`path,label`),
//! with folder names mapped onto the model's labels. Segmentation masks (`*_mask*` files, as BUSI
//! ships beside its images) are skipped and counted, never scored; decoding happens later, so a
//! corrupt file is found and listed by the scorer.

use std::path::{Path, PathBuf};

/// Image file extensions the still loader reads.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The cause is in the message, not a `#[source]`: `{e:#}` would print it twice.
    #[error("cannot read data set {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{at}: label {label:?} is not one of the model's labels {labels:?}; consider --map {label}=LABEL")]
    UnknownLabel { at: String, label: String, labels: Vec<String> },
    #[error("--map {from}={to}: {to:?} is not one of the model's labels {labels:?}; check the spelling after `=`")]
    BadMapTarget { from: String, to: String, labels: Vec<String> },
    #[error("{0}:{1}: expected `path,label`")]
    BadLine(PathBuf, usize),
    #[error("--map {0:?}: expected FROM=TO")]
    BadMap(String),
    #[error("data set {0} holds no images; check that it has one subfolder per label, or is a CSV of path,label")]
    Empty(PathBuf),
}

/// One image to score and its true label's index in the model's label order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    pub label: usize,
}

/// The images to score, and what was left out before scoring (with the reason in the name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    pub items: Vec<Item>,
    pub masks_skipped: usize,
    pub non_images_skipped: Vec<PathBuf>,
}

/// `FROM=TO` label renames from the command line.
pub fn parse_map(entries: &[String]) -> Result<Vec<(String, String)>, DatasetError> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((from.to_string(), to.to_string())),
            _ => Err(DatasetError::BadMap(e.clone())),
        })
        .collect()
}

/// One listed file, its label as written, and where it was listed (for error messages: the
/// file itself in an ImageFolder, `manifest:line` in a CSV).
struct Entry {
    path: PathBuf,
    label: String,
    at: String,
}

/// Reads `source`: a CSV file as a manifest, a folder as an ImageFolder.
pub fn load(source: &Path, labels: &[String], map: &[(String, String)]) -> Result<Dataset, DatasetError> {
    check_map_targets(labels, map)?;
    let entries = if source.is_file() { read_manifest(source)? } else { read_image_folder(source)? };
    let mut set = Dataset::default();
    for Entry { path, label, at } in entries {
        if is_mask(&path) {
            set.masks_skipped += 1;
        } else if !is_image(&path) {
            set.non_images_skipped.push(path);
        } else {
            let label = label_index(&at, &label, labels, map)?;
            set.items.push(Item { path, label });
        }
    }
    if set.items.is_empty() {
        return Err(DatasetError::Empty(source.to_path_buf()));
    }
    Ok(set)
}

/// BUSI's masks are `<image>_mask.png` and `<image>_mask_1.png`.
pub fn is_mask(path: &Path) -> bool {
    path.file_stem().is_some_and(|s| s.to_string_lossy().to_lowercase().contains("_mask"))
}

fn is_image(path: &Path) -> bool {
    path.extension().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str()))
}

/// Every `--map` target must be one of the model's labels (else every image mapped to it would
/// be refused with a message about the source name, not the typo).
fn check_map_targets(labels: &[String], map: &[(String, String)]) -> Result<(), DatasetError> {
    match map.iter().find(|(_, to)| !labels.contains(to)) {
        Some((from, to)) => Err(DatasetError::BadMapTarget { from: from.clone(), to: to.clone(), labels: labels.to_vec() }),
        None => Ok(()),
    }
}

fn label_index(at: &str, name: &str, labels: &[String], map: &[(String, String)]) -> Result<usize, DatasetError> {
    let mapped = map.iter().find(|(from, _)| from == name).map_or(name, |(_, to)| to.as_str());
    labels.iter().position(|l| l == mapped).ok_or_else(|| DatasetError::UnknownLabel {
        at: at.to_string(),
        label: name.to_string(),
        labels: labels.to_vec(),
    })
}

/// Every file under each subfolder (recursively), with the subfolder's name; sorted by path so
/// runs and reports are reproducible. Files at the top level belong to no label and are ignored.
fn read_image_folder(root: &Path) -> Result<Vec<Entry>, DatasetError> {
    let mut entries = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files = Vec::new();
        collect_files(&dir, &mut files)?;
        entries.extend(files.into_iter().map(|f| Entry { at: f.display().to_string(), path: f, label: name.clone() }));
    }
    Ok(entries)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DatasetError> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |e| DatasetError::Io(dir.to_path_buf(), e);
    let mut paths = std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>().map_err(io)?;
    paths.sort();
    Ok(paths)
}

/// `path,label` lines (an optional `path,label` header; blank lines and `#` comments skipped);
/// relative paths are taken from the manifest's folder. The label is after the last comma, so
/// paths may hold commas; quoting is not supported.
fn read_manifest(csv: &Path) -> Result<Vec<Entry>, DatasetError> {
    let text = std::fs::read_to_string(csv).map_err(|e| DatasetError::Io(csv.to_path_buf(), e))?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') || (i == 1 && line.eq_ignore_ascii_case("path,label")) {
            continue;
        }
        let Some((path, label)) = line.rsplit_once(',') else { return Err(DatasetError::BadLine(csv.to_path_buf(), i)) };
        entries.push(Entry { path: base.join(path.trim()), label: label.trim().to_string(), at: format!("{}:{i}", csv.display()) });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["benign", "malignant", "normal"].map(String::from).to_vec()
    }

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sonoedge-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn image_folder_skips_masks_with_a_count_and_lists_non_images() {
        let root = temp_dir("folder");
        for f in ["benign/b 1.png", "benign/b 1_mask.png", "benign/b 1_mask_1.png", "malignant/m.JPG", "normal/notes.txt"] {
            touch(&root, f);
        }
        touch(&root, "README.md");
        let set = load(&root, &labels(), &[]).unwrap();
        let found: Vec<(String, usize)> =
            set.items.iter().map(|i| (i.path.file_name().unwrap().to_string_lossy().into_owned(), i.label)).collect();
        assert_eq!(found, [("b 1.png".to_string(), 0), ("m.JPG".to_string(), 1)]);
        assert_eq!((set.masks_skipped, set.non_images_skipped.len()), (2, 1));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unknown_folder_name_is_an_error_that_suggests_map_and_map_fixes_it() {
        let root = temp_dir("map");
        touch(&root, "benign_breast_cancer/a.png");
        let err = load(&root, &labels(), &[]).unwrap_err().to_string();
        assert!(err.contains("--map benign_breast_cancer=LABEL"), "{err}");
        let map = parse_map(&["benign_breast_cancer=benign".into()]).unwrap();
        assert_eq!(load(&root, &labels(), &map).unwrap().items[0].label, 0);
        let typo = parse_map(&["benign_breast_cancer=bengin".into()]).unwrap();
        let err = load(&root, &labels(), &typo).unwrap_err().to_string();
        assert!(err.starts_with("--map benign_breast_cancer=bengin: \"bengin\" is not one of the model's labels"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn manifest_paths_are_relative_to_the_manifest_and_masks_are_skipped() {
        let root = temp_dir("csv");
        std::fs::write(root.join("set.csv"), "path,label\n\n# a comment\nimgs/a,b.png,malignant\nimgs/a_mask.png,malignant\n").unwrap();
        let set = load(&root.join("set.csv"), &labels(), &[]).unwrap();
        assert_eq!(set.items, [Item { path: root.join("imgs/a,b.png"), label: 1 }]);
        assert_eq!(set.masks_skipped, 1);
        std::fs::write(root.join("bad.csv"), "just-a-path.png\n").unwrap();
        assert!(matches!(load(&root.join("bad.csv"), &labels(), &[]), Err(DatasetError::BadLine(_, 1))));
        std::fs::write(root.join("label.csv"), "a.png,benign\nb.png,cancer\n").unwrap();
        let err = load(&root.join("label.csv"), &labels(), &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: label \"cancer\"", root.join("label.csv").display())), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_set_with_nothing_to_score_is_an_error_and_a_bad_map_is_refused() {
        let root = temp_dir("empty");
        touch(&root, "benign/x_mask.png");
        assert!(matches!(load(&root, &labels(), &[]), Err(DatasetError::Empty(_))));
        assert!(parse_map(&["benign".into()]).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
