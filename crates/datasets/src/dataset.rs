//! The in-memory dataset type shared by every reader and by the input pipeline.

use pyramid_rng::Rng;

/// A labelled image dataset held as `u8` pixels in NCHW order.
///
/// `images.len() == n * channels * height * width` and `labels.len() == n`; every label is
/// `< class_names.len()`. Readers guarantee these invariants; code that builds a `Dataset` by
/// hand can check them with [`Dataset::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Data set name, e.g. `stl10` (for messages and reports).
    pub name: String,
    /// N×C×H×W bytes; pixel (i, c, h, w) is at `((i*C + c)*H + h)*W + w`.
    pub images: Vec<u8>,
    /// Label of each image, `< class_names.len()`.
    pub labels: Vec<u32>,
    /// Number of images.
    pub n: usize,
    /// Channels per image (1 grayscale, 3 RGB).
    pub channels: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Image width, pixels.
    pub width: usize,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of classes (`class_names.len()`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The C×H×W bytes of image `i`. Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }

    /// Pixel (i, c, h, w).
    pub fn pixel(&self, i: usize, c: usize, h: usize, w: usize) -> u8 {
        self.images[((i * self.channels + c) * self.height + h) * self.width + w]
    }

    /// Checks the size and label invariants; returns a description of the first violation.
    pub fn validate(&self) -> Result<(), String> {
        if self.images.len() != self.n * self.image_len() {
            return Err(format!(
                "{}: images has {} bytes, expected {}×{}×{}×{} = {}",
                self.name,
                self.images.len(),
                self.n,
                self.channels,
                self.height,
                self.width,
                self.n * self.image_len()
            ));
        }
        if self.labels.len() != self.n {
            return Err(format!(
                "{}: {} labels for {} images",
                self.name,
                self.labels.len(),
                self.n
            ));
        }
        if let Some((i, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes())
        {
            return Err(format!(
                "{}: label {l} of image {i} is out of range (num_classes = {})",
                self.name,
                self.num_classes()
            ));
        }
        Ok(())
    }

    /// Number of images per class (index = label).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0usize; self.num_classes()];
        for &l in &self.labels {
            if let Some(x) = c.get_mut(l as usize) {
                *x += 1;
            }
        }
        c
    }

    /// A new dataset of the images at `indices` (in that order; repeats allowed).
    /// Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let l = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * l);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            n: indices.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// `self` followed by `other`, keeping `self`'s name and class names. The image shapes
    /// must agree; `other`'s labels must be valid for `self`'s classes.
    pub fn concat(&self, other: &Dataset) -> Result<Dataset, String> {
        let shape = |d: &Dataset| (d.channels, d.height, d.width);
        if shape(self) != shape(other) {
            return Err(format!(
                "cannot join {} ({:?}) and {} ({:?}): image shapes differ",
                self.name,
                shape(self),
                other.name,
                shape(other)
            ));
        }
        if let Some(&l) = other
            .labels
            .iter()
            .find(|&&l| l as usize >= self.num_classes())
        {
            return Err(format!(
                "cannot join {} to {}: label {l} is out of range for {} classes",
                other.name,
                self.name,
                self.num_classes()
            ));
        }
        let mut images = Vec::with_capacity(self.images.len() + other.images.len());
        images.extend_from_slice(&self.images);
        images.extend_from_slice(&other.images);
        let mut labels = self.labels.clone();
        labels.extend_from_slice(&other.labels);
        Ok(Dataset {
            name: format!("{}+{}", self.name, other.name),
            images,
            labels,
            n: self.n + other.n,
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        })
    }

    /// Indices of at most `per_class` images of each class, chosen by a seeded shuffle and
    /// returned in ascending order (so the subset keeps the original order).
    pub fn class_balanced_indices(&self, per_class: usize, seed: u64) -> Vec<usize> {
        let mut rng = Rng::stream(seed, "datasets/class_balanced_subset");
        let perm = rng.permutation(self.n);
        let mut taken = vec![0usize; self.num_classes()];
        let mut out = Vec::with_capacity(per_class * self.num_classes());
        for i in perm {
            let l = self.labels[i] as usize;
            if let Some(t) = taken.get_mut(l) {
                if *t < per_class {
                    *t += 1;
                    out.push(i);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// At most `per_class` images of each class (all of a class that has fewer), chosen by a
    /// seeded shuffle, in their original order.
    pub fn class_balanced_subset(&self, per_class: usize, seed: u64) -> Dataset {
        self.subset(&self.class_balanced_indices(per_class, seed))
    }

    /// Stratified, seeded split: from each class, `round(fraction · count)` images go to the
    /// second (validation) set, the rest to the first (training) set. Both keep the original
    /// order. `fraction` is clamped to [0, 1].
    pub fn split_holdout_indices(&self, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let base = Rng::stream(seed, "datasets/split_holdout");
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(v) = by_class.get_mut(l as usize) {
                v.push(i);
            }
        }
        let mut train = Vec::new();
        let mut val = Vec::new();
        for (c, mut idx) in by_class.into_iter().enumerate() {
            base.derive(&format!("class{c}")).shuffle(&mut idx);
            let k = (fraction * idx.len() as f64).round() as usize;
            val.extend_from_slice(&idx[..k]);
            train.extend_from_slice(&idx[k..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        (train, val)
    }

    /// See [`Dataset::split_holdout_indices`]; returns `(train, val)` datasets.
    pub fn split_holdout(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let (t, v) = self.split_holdout_indices(fraction, seed);
        let mut train = self.subset(&t);
        let mut val = self.subset(&v);
        train.name = format!("{}[train]", self.name);
        val.name = format!("{}[holdout]", self.name);
        (train, val)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn toy(n: usize, classes: usize) -> Dataset {
        let (c, h, w) = (1, 2, 3);
        Dataset {
            name: "toy".into(),
            images: (0..n * c * h * w).map(|x| (x % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % classes) as u32).collect(),
            n,
            channels: c,
            height: h,
            width: w,
            class_names: (0..classes).map(|i| format!("c{i}")).collect(),
        }
    }

    #[test]
    fn concat_appends_and_checks_shapes_and_labels() {
        let a = toy(3, 4);
        let b = toy(2, 2);
        let j = a.concat(&b).unwrap();
        assert_eq!(j.n, 5);
        assert_eq!(j.image(3), b.image(0));
        assert_eq!(j.labels, vec![0, 1, 2, 0, 1]);
        assert_eq!(j.class_names, a.class_names);
        assert!(j.validate().is_ok());
        let mut wide = toy(1, 4);
        wide.width = 2;
        wide.images.truncate(4);
        let e = a.concat(&wide).unwrap_err();
        assert!(e.contains("image shapes differ"), "{e}");
        let e = b.concat(&a).unwrap_err();
        assert!(e.contains("label 2 is out of range for 2 classes"), "{e}");
    }

    #[test]
    fn subset_and_balanced() {
        let d = toy(100, 4);
        assert!(d.validate().is_ok());
        let s = d.subset(&[3, 1]);
        assert_eq!(s.n, 2);
        assert_eq!(s.image(0), d.image(3));
        assert_eq!(s.labels, vec![3, 1]);
        let b = d.class_balanced_subset(5, 7);
        assert_eq!(b.class_counts(), vec![5; 4]);
        assert_eq!(b, d.class_balanced_subset(5, 7));
        assert_ne!(
            d.class_balanced_indices(5, 7),
            d.class_balanced_indices(5, 8)
        );
        // more than available: all of it
        assert_eq!(d.class_balanced_subset(1000, 1).n, 100);
    }

    #[test]
    fn holdout_is_stratified_and_disjoint() {
        let d = toy(103, 5);
        let (t, v) = d.split_holdout_indices(0.2, 42);
        assert_eq!(t.len() + v.len(), 103);
        let mut all: Vec<usize> = t.iter().chain(v.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        let (tr, va) = d.split_holdout(0.2, 42);
        for (c, &n) in d.class_counts().iter().enumerate() {
            let want = (0.2 * n as f64).round() as usize;
            assert_eq!(va.class_counts()[c], want);
            assert_eq!(tr.class_counts()[c], n - want);
        }
        assert_eq!(d.split_holdout_indices(0.2, 42), (t, v));
    }
}
