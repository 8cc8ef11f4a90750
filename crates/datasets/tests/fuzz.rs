//! Property tests: the parsers never panic on random, truncated or mutated input; they return
//! typed errors instead.

use std::path::Path;

use proptest::prelude::*;
use pyramid_datasets::idx::{
    gzip, parse_idx_pair, write_idx_images, write_idx_labels, FASHION_MNIST_CLASSES,
};
use pyramid_datasets::{cifar, pickle, stl10};

fn valid_idx() -> (Vec<u8>, Vec<u8>) {
    let imgs: Vec<u8> = (0..3 * 28 * 28).map(|x| x as u8).collect();
    (
        write_idx_images(3, 28, 28, &imgs),
        write_idx_labels(&[1, 2, 3]),
    )
}

fn pickle_fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cifar-10-batches-py/data_batch_1"),
    )
    .unwrap()
}

fn p() -> &'static Path {
    Path::new("fuzz")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn idx_random_bytes(a in proptest::collection::vec(any::<u8>(), 0..300),
                        b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx_pair("f", p(), a.clone(), p(), b.clone(), &FASHION_MNIST_CLASSES);
        // with a valid header prefix, random dims and data
        let mut h = vec![0, 0, 8, 3];
        h.extend_from_slice(&a);
        let mut l = vec![0, 0, 8, 1];
        l.extend_from_slice(&b);
        let _ = parse_idx_pair("f", p(), h, p(), l, &FASHION_MNIST_CLASSES);
    }

    #[test]
    fn idx_truncated_or_mutated(cut in 0usize..2400, pos in 0usize..2400, val in any::<u8>(), gz in any::<bool>()) {
        let (mut i, l) = valid_idx();
        if pos < i.len() { i[pos] = val; }
        let mut i = i[..cut.min(i.len())].to_vec();
        if gz { let full = gzip(&i); i = full[..full.len().saturating_sub(cut % 7)].to_vec(); }
        let _ = parse_idx_pair("f", p(), i, p(), l, &FASHION_MNIST_CLASSES);
    }

    #[test]
    fn binary_records_random(x in proptest::collection::vec(any::<u8>(), 0..7000), nl in 1usize..3) {
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        let limits = if nl == 1 { vec![10] } else { vec![20, 100] };
        let r = cifar::parse_records(p(), &x, &limits, nl - 1, &mut im, &mut lb);
        if let Ok(n) = r {
            prop_assert_eq!(lb.len(), n);
            prop_assert_eq!(im.len(), n * 3072);
        }
    }

    #[test]
    fn stl10_random(len in 0usize..60000, y in proptest::collection::vec(any::<u8>(), 0..4)) {
        let names: Vec<String> = stl10::CLASSES.iter().map(|s| s.to_string()).collect();
        let r = stl10::parse_stl10("s", p(), vec![3u8; len], p(), &y, names);
        if let Ok(d) = r {
            prop_assert!(d.validate().is_ok());
        }
    }

    #[test]
    fn pickle_random_bytes(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = pickle::parse(p(), &b);
        let mut with_proto = vec![0x80, 2];
        with_proto.extend_from_slice(&b);
        let _ = pickle::parse(p(), &with_proto);
    }

    #[test]
    fn pickle_truncated_or_mutated(cut in 0usize..9200, pos in 0usize..400, val in any::<u8>()) {
        let mut b = pickle_fixture();
        if pos < b.len() { b[pos] = val; }
        b.truncate(cut);
        if let Ok(v) = pickle::parse(p(), &b) {
            let _ = v.cifar_batch(p(), "labels", 10);
        }
    }

    #[test]
    fn pickle_opcode_soup(ops in proptest::collection::vec(
        prop::sample::select(vec![b'(', b'}', b']', b')', b'a', b'e', b's', b'u', b't', 0x85, 0x86, 0x87,
            b'K', b'N', b'R', b'b', b'0', b'1', b'2', b'q', b'h', 0x94, b'.', 0x88, 0x89]), 0..300)) {
        let mut b = vec![0x80, 2];
        for o in ops { b.push(o); if matches!(o, b'K' | b'q' | b'h') { b.push(0); } }
        b.push(b'.');
        let _ = pickle::parse(p(), &b);
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    // 1,000,000 nested lists would overflow the stack on drop; the container cap refuses it.
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b']', 1_000_000));
    b.extend(std::iter::repeat_n(b'a', 999_999));
    b.push(b'.');
    let e = pickle::parse(p(), &b).unwrap_err().to_string();
    assert!(e.contains("nested too deeply"), "{e}");
}

#[test]
fn memo_copy_bomb_is_refused() {
    // each round: a list of 8 copies of the previous one (x8 nodes per round)
    let mut b = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        b.push(b'(');
        for _ in 0..8 {
            b.extend_from_slice(&[b'h', 0]);
        }
        b.extend_from_slice(&[b'l', b'q', 0]);
    }
    b.push(b'.');
    let e = pickle::parse(p(), &b).unwrap_err().to_string();
    assert!(e.contains("copies too much"), "{e}");
}
