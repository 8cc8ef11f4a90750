//! Writes PyTorch `.pth` (zip) state dicts the way `torch.save` does, opcode for opcode, so the
//! import path is tested without Python. Reference disassembly (torch 2.15, `pickletools.dis`):
//! PROTO 2, GLOBAL 'collections OrderedDict', EMPTY_TUPLE, REDUCE, MARK, then per tensor
//! BINUNICODE key, GLOBAL 'torch._utils _rebuild_tensor_v2', MARK, MARK 'storage'
//! GLOBAL 'torch FloatStorage' '<id>' 'cpu' numel TUPLE, BINPERSID, offset, size tuple, stride
//! tuple, NEWFALSE, OrderedDict(), TUPLE, REDUCE; SETITEMS, STOP.

use std::io::Write;
use std::path::Path;

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend((v as i32).to_le_bytes());
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend(format!("{module}\n{name}\n").as_bytes());
}

fn tuple(out: &mut Vec<u8>, vs: &[usize]) {
    out.push(b'(');
    for &v in vs {
        int(out, v);
    }
    out.push(b't');
}

/// Writes `tensors` (name, shape, values) as a torch.save'd OrderedDict at `path`.
pub fn write_pth(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut pkl = vec![0x80, 2];
    global(&mut pkl, "collections", "OrderedDict");
    pkl.extend([b')', b'R', b'(']);
    for (i, (name, shape, _)) in tensors.iter().enumerate() {
        unicode(&mut pkl, name);
        global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
        pkl.extend([b'(', b'(']);
        unicode(&mut pkl, "storage");
        global(&mut pkl, "torch", "FloatStorage");
        unicode(&mut pkl, &i.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, shape.iter().product());
        pkl.extend([b't', b'Q']);
        int(&mut pkl, 0);
        tuple(&mut pkl, shape);
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        tuple(&mut pkl, &strides);
        pkl.push(0x89);
        global(&mut pkl, "collections", "OrderedDict");
        pkl.extend([b')', b'R', b't', b'R']);
    }
    pkl.extend([b'u', b'.']);

    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&pkl).unwrap();
    zip.start_file("archive/byteorder", opts).unwrap();
    zip.write_all(b"little").unwrap();
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}
