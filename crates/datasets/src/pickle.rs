//! A minimal, panic-free reader for the Python pickles of the CIFAR python versions.
//!
//! Supports the opcodes of protocols 0–5 that these files use (Python 2 `cPickle` protocol 2
//! as shipped, and Python 3 re-pickles of the same dicts): dicts, lists, tuples, ints, floats,
//! strings and bytes (including Python 3's protocol-2 `_codecs.encode(str, 'latin1')` form),
//! memo, and numpy arrays rebuilt via `numpy.core.multiarray._reconstruct` + `BUILD` (state
//! `(version, shape, dtype, is_fortran, raw bytes)`) or `numpy.core.numeric._frombuffer`.
//! Any other global is kept as an opaque object; nothing is executed.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{read_file, Error, Result};

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` (within i64; larger integers are a format error).
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python 2 `str` / Python 3 `bytes`.
    Bytes(Vec<u8>),
    /// Python `unicode` / Python 3 `str`.
    Str(String),
    /// Python `list`.
    List(Vec<Value>),
    /// Python `tuple`.
    Tuple(Vec<Value>),
    /// Python `dict`, as key/value pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to `module.name`.
    Global(String, String),
    /// `module.name(*args)` for a callable we do not interpret, with a `BUILD` state if any.
    Object {
        /// `module.name` of the callable.
        class: String,
        /// Its positional arguments.
        args: Vec<Value>,
        /// The `BUILD` state, if one was applied.
        state: Option<Box<Value>>,
    },
    /// A numpy dtype, by its type string (e.g. `u1`, `<i8`).
    Dtype(String),
    /// A numpy array: shape, dtype string, raw C-order bytes.
    Array {
        /// Dimensions, outermost first.
        shape: Vec<usize>,
        /// numpy type string, e.g. `u1` or `<i8`.
        dtype: String,
        /// The elements' bytes in C order.
        data: Vec<u8>,
    },
}

impl Value {
    /// Text of a `Str` or (latin-1) `Bytes` value.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// Looks up a dict entry whose key is `key` as `str` or `bytes`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_text().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn get_req(&self, path: &Path, key: &str) -> Result<&Value> {
        if !matches!(self, Value::Dict(_)) {
            return Err(Error::format(path, 0, "pickle does not hold a dict"));
        }
        self.get(key)
            .ok_or_else(|| Error::format(path, 0, format!("pickled dict has no key {key:?}")))
    }

    /// A list of strings stored under `key` (e.g. `label_names`).
    pub fn string_list(&self, path: &Path, key: &str) -> Result<Vec<String>> {
        match self.get_req(path, key)? {
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    x.as_text().ok_or_else(|| {
                        Error::record(path, i, format!("{key}[{i}] is not a string"))
                    })
                })
                .collect(),
            other => Err(Error::format(
                path,
                0,
                format!("{key} is not a list but {}", other.kind()),
            )),
        }
    }

    /// Integers stored under `key` (a list, or a 1-d integer numpy array).
    pub fn int_list(&self, path: &Path, key: &str) -> Result<Vec<i64>> {
        match self.get_req(path, key)? {
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::Int(n) => Ok(*n),
                    Value::Bool(b) => Ok(i64::from(*b)),
                    o => Err(Error::record(
                        path,
                        i,
                        format!("{key}[{i}] is {} not an int", o.kind()),
                    )),
                })
                .collect(),
            Value::Array { dtype, data, .. } => {
                let d = dtype.trim_start_matches(['<', '|', '=']);
                let w = match d {
                    "u1" | "i1" => 1,
                    "i2" | "u2" => 2,
                    "i4" | "u4" => 4,
                    "i8" | "u8" => 8,
                    _ => {
                        return Err(Error::format(
                            path,
                            0,
                            format!("{key}: unsupported dtype {dtype}"),
                        ))
                    }
                };
                let signed = d.starts_with('i');
                Ok(data
                    .chunks_exact(w)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b[..w].copy_from_slice(c);
                        let u = u64::from_le_bytes(b);
                        if signed && w < 8 && (u >> (8 * w - 1)) & 1 == 1 {
                            (u | (!0u64 << (8 * w))) as i64
                        } else {
                            u as i64
                        }
                    })
                    .collect())
            }
            other => Err(Error::format(
                path,
                0,
                format!("{key} is not a list but {}", other.kind()),
            )),
        }
    }

    /// Extracts a CIFAR batch: `data` (N×3072 uint8) and the labels under `label_key`, each
    /// checked to be `< num_classes`.
    pub fn cifar_batch(
        &self,
        path: &Path,
        label_key: &str,
        num_classes: usize,
    ) -> Result<(Vec<u8>, Vec<u32>)> {
        let (shape, dtype, data) = match self.get_req(path, "data")? {
            Value::Array { shape, dtype, data } => (shape, dtype, data),
            other => {
                return Err(Error::format(
                    path,
                    0,
                    format!("'data' is {} not a numpy array", other.kind()),
                ))
            }
        };
        if dtype.trim_start_matches(['|', '<', '=']) != "u1" {
            return Err(Error::format(
                path,
                0,
                format!("'data' has dtype {dtype}, expected uint8"),
            ));
        }
        let n = shape.first().copied().unwrap_or(0);
        let per: usize = shape.iter().skip(1).product();
        if shape.len() < 2 || per != crate::cifar::IMAGE_BYTES {
            return Err(Error::format(
                path,
                0,
                format!("'data' has shape {shape:?}, expected (N, 3072)"),
            ));
        }
        let labels = self.int_list(path, label_key)?;
        if labels.len() != n {
            return Err(Error::format(
                path,
                0,
                format!("{} {label_key} for {n} images", labels.len()),
            ));
        }
        let mut out = Vec::with_capacity(n);
        for (i, &l) in labels.iter().enumerate() {
            if l < 0 || l as usize >= num_classes {
                return Err(Error::record(
                    path,
                    i,
                    format!("{label_key}[{i}] = {l} out of range 0..{num_classes}"),
                ));
            }
            out.push(l as u32);
        }
        Ok((data.clone(), out))
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "a str",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Global(..) => "a global",
            Value::Object { .. } => "an object",
            Value::Dtype(_) => "a dtype",
            Value::Array { .. } => "an array",
        }
    }
}

/// Reads and decodes a pickle file (gzip-compressed pickles are accepted too).
pub fn read_pickle_file(path: &Path) -> Result<Value> {
    let b = crate::idx::maybe_gunzip(path, read_file(path)?)?;
    parse(path, &b)
}

/// Nesting depth and node count of a stack value, tracked so that hostile input can neither
/// nest deeply enough to overflow the native stack (on drop or clone) nor blow up memory
/// through repeated memo copies.
#[derive(Debug, Clone, Copy)]
struct Meta {
    depth: u32,
    nodes: u64,
}

impl Meta {
    const LEAF: Meta = Meta { depth: 0, nodes: 1 };
    fn parent_of<'m>(ms: impl IntoIterator<Item = &'m Meta>) -> Meta {
        let mut m = Meta { depth: 1, nodes: 1 };
        for c in ms {
            m.absorb(*c);
        }
        m
    }
    fn absorb(&mut self, c: Meta) {
        self.depth = self.depth.max(c.depth + 1);
        self.nodes = self.nodes.saturating_add(c.nodes);
    }
}

enum Item {
    Mark,
    V(Value, Meta),
}

/// Deepest nesting accepted (CIFAR pickles nest 4 levels).
const MAX_DEPTH: u32 = 200;

struct Vm<'a> {
    path: &'a Path,
    b: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, (Value, Meta)>,
    /// Nodes copied by memo PUT/GET and DUP so far, and the limit.
    copied: u64,
    copy_budget: u64,
}

/// Decodes pickle bytes (`path` is only used in error messages).
pub fn parse(path: &Path, b: &[u8]) -> Result<Value> {
    let mut vm = Vm {
        path,
        b,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
        copy_budget: 4 * b.len() as u64 + 1_000_000,
    };
    vm.run()
}

impl<'a> Vm<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> Error {
        Error::format(self.path, at as u64, msg)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                Error::size(
                    self.path,
                    (self.pos as u64).saturating_add(n as u64),
                    self.b.len() as u64,
                    format!(
                        "pickle truncated: {n} bytes needed at byte offset {}",
                        self.pos
                    ),
                )
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(self.pos, format!("length {n} too large")))
    }
    fn line(&mut self) -> Result<&'a [u8]> {
        let start = self.pos;
        let rel = self.b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| self.err(start, "pickle truncated: unterminated text line"))?;
        self.pos = start + rel + 1;
        Ok(&self.b[start..start + rel])
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Item::V(v, Meta::LEAF));
    }

    fn push_m(&mut self, at: usize, v: Value, m: Meta) -> Result<()> {
        if m.depth > MAX_DEPTH {
            return Err(self.err(at, "pickle nested too deeply"));
        }
        self.stack.push(Item::V(v, m));
        Ok(())
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        Ok(self.pop_m(at)?.0)
    }

    fn pop_m(&mut self, at: usize) -> Result<(Value, Meta)> {
        match self.stack.pop() {
            Some(Item::V(v, m)) => Ok((v, m)),
            Some(Item::Mark) => Err(self.err(at, "unexpected MARK on the stack")),
            None => Err(self.err(at, "pickle stack underflow")),
        }
    }

    /// Adds `children` to the container on top of the stack via `f` (false: wrong type).
    fn extend_top(
        &mut self,
        at: usize,
        children: Vec<(Value, Meta)>,
        f: impl FnOnce(&mut Value, Vec<Value>) -> bool,
    ) -> Result<()> {
        let path = self.path;
        let (v, m) = match self.stack.last_mut() {
            Some(Item::V(v, m)) => (v, m),
            _ => return Err(Error::format(path, at as u64, "pickle stack underflow")),
        };
        let mut vals = Vec::with_capacity(children.len());
        for (c, cm) in children {
            m.absorb(cm);
            vals.push(c);
        }
        let depth = m.depth;
        if !f(v, vals) {
            return Err(Error::format(
                path,
                at as u64,
                "APPEND/SETITEM on a value of the wrong type",
            ));
        }
        if depth > MAX_DEPTH {
            return Err(Error::format(path, at as u64, "pickle nested too deeply"));
        }
        Ok(())
    }

    /// Pops everything down to the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<(Value, Meta)>> {
        let k = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| self.err(at, "no MARK on the pickle stack"))?;
        let items: Vec<Item> = self.stack.drain(k..).collect();
        Ok(items
            .into_iter()
            .skip(1)
            .filter_map(|i| match i {
                Item::V(v, m) => Some((v, m)),
                Item::Mark => None,
            })
            .collect())
    }

    fn charge_copy(&mut self, at: usize, m: Meta) -> Result<()> {
        self.copied = self.copied.saturating_add(m.nodes);
        if self.copied > self.copy_budget {
            return Err(self.err(at, "pickle copies too much memoised data"));
        }
        Ok(())
    }

    fn str_of(&self, at: usize, b: &[u8]) -> Result<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.err(at, "invalid UTF-8 in pickle string"))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(at, format!("unsupported pickle protocol {p}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: the frame length is informative only
                }
                b'.' => return self.pop(at),
                b'(' => self.stack.push(Item::Mark),
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'l' | b't' | b'd' => {
                    let xs = self.pop_mark(at)?;
                    let m = Meta::parent_of(xs.iter().map(|(_, m)| m));
                    let vals: Vec<Value> = xs.into_iter().map(|(v, _)| v).collect();
                    let v = match op {
                        b'l' => Value::List(vals),
                        b't' => Value::Tuple(vals),
                        _ => Value::Dict(self.pairs(at, vals)?),
                    };
                    self.push_m(at, v, m)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut xs = Vec::with_capacity(n);
                    for _ in 0..n {
                        xs.push(self.pop_m(at)?);
                    }
                    xs.reverse();
                    let m = Meta::parent_of(xs.iter().map(|(_, m)| m));
                    let vals = xs.into_iter().map(|(v, _)| v).collect();
                    self.push_m(at, Value::Tuple(vals), m)?
                }
                b'a' | b'e' => {
                    let xs = if op == b'a' {
                        vec![self.pop_m(at)?]
                    } else {
                        self.pop_mark(at)?
                    };
                    self.extend_top(at, xs, |top, vals| match top {
                        Value::List(l) => {
                            l.extend(vals);
                            true
                        }
                        _ => false,
                    })?
                }
                b's' | b'u' => {
                    let xs = if op == b's' {
                        let v = self.pop_m(at)?;
                        let k = self.pop_m(at)?;
                        vec![k, v]
                    } else {
                        self.pop_mark(at)?
                    };
                    if xs.len() & 1 == 1 {
                        return Err(self.err(at, "odd number of items for a dict"));
                    }
                    self.extend_top(at, xs, |top, vals| match top {
                        Value::Dict(d) => {
                            let mut it = vals.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                d.push((k, v));
                            }
                            true
                        }
                        _ => false,
                    })?
                }
                b'p' => {
                    let l = self.line()?;
                    let id = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                        .ok_or_else(|| self.err(at, "bad PUT index"))?;
                    self.put(at, id)?
                }
                b'q' => {
                    let id = u32::from(self.u8()?);
                    self.put(at, id)?
                }
                b'r' => {
                    let id = self.u32()?;
                    self.put(at, id)?
                }
                0x94 => {
                    let id = self.memo.len() as u32;
                    self.put(at, id)?
                }
                b'g' => {
                    let l = self.line()?;
                    let id = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok())
                        .ok_or_else(|| self.err(at, "bad GET index"))?;
                    self.get(at, id)?
                }
                b'h' => {
                    let id = u32::from(self.u8()?);
                    self.get(at, id)?
                }
                b'j' => {
                    let id = self.u32()?;
                    self.get(at, id)?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(i64::from(v)))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(i64::from(v)))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    let v = le_signed(s).ok_or_else(|| self.err(at, "LONG1 wider than 64 bits"))?;
                    self.push(Value::Int(v))
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?;
                    let v = le_signed(s).ok_or_else(|| self.err(at, "LONG4 wider than 64 bits"))?;
                    self.push(Value::Int(v))
                }
                b'I' | b'L' => {
                    let l = self.line()?;
                    let s = std::str::from_utf8(l)
                        .map_err(|_| self.err(at, "bad INT text"))?
                        .trim()
                        .trim_end_matches('L');
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            s.parse::<i64>()
                                .map_err(|_| self.err(at, format!("bad INT text {s:?}")))?,
                        ),
                    };
                    self.push(v)
                }
                b'F' => {
                    let l = self.line()?;
                    let v = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.err(at, "bad FLOAT text"))?;
                    self.push(Value::Float(v))
                }
                b'G' => {
                    let v = f64::from_bits(u64::from_be_bytes({
                        let s = self.take(8)?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(s);
                        a
                    }));
                    self.push(Value::Float(v))
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.push(Value::Bytes(s))
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.push(Value::Bytes(s))
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let s = self.take(n)?.to_vec();
                    self.push(Value::Bytes(s))
                }
                b'S' => {
                    let l = self.line()?;
                    let s = unquote(l).ok_or_else(|| self.err(at, "bad STRING literal"))?;
                    self.push(Value::Bytes(s))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?;
                    let s = self.str_of(at, s)?;
                    self.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    let s = self.str_of(at, s)?;
                    self.push(Value::Str(s))
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.take(n)?;
                    let s = self.str_of(at, s)?;
                    self.push(Value::Str(s))
                }
                b'V' => {
                    let l = self.line()?;
                    let s = self.str_of(at, l)?;
                    self.push(Value::Str(s))
                }
                b'c' => {
                    let m = self.line()?;
                    let n = self.line()?;
                    let m = self.str_of(at, m)?;
                    let n = self.str_of(at, n)?;
                    self.push(Value::Global(m, n))
                }
                0x93 => {
                    let n = self.pop(at)?;
                    let m = self.pop(at)?;
                    match (m, n) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n)),
                        _ => return Err(self.err(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let (args, am) = self.pop_m(at)?;
                    let (f, fm) = self.pop_m(at)?;
                    let v = self.reduce(at, f, args)?;
                    self.push_m(at, v, Meta::parent_of([&am, &fm]))?
                }
                b'b' => {
                    let (state, sm) = self.pop_m(at)?;
                    let (obj, om) = self.pop_m(at)?;
                    let v = self.build(at, obj, state)?;
                    self.push_m(at, v, Meta::parent_of([&sm, &om]))?
                }
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or_else(|| self.err(at, "POP on an empty stack"))?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let m = match self.stack.last() {
                        Some(Item::V(_, m)) => *m,
                        _ => return Err(self.err(at, "DUP on an empty stack")),
                    };
                    self.charge_copy(at, m)?;
                    if let Some(Item::V(v, m)) = self.stack.last() {
                        let item = Item::V(v.clone(), *m);
                        self.stack.push(item);
                    }
                }
                _ => {
                    return Err(self.err(at, format!("unsupported pickle opcode 0x{op:02x}")));
                }
            }
        }
    }

    fn put(&mut self, at: usize, id: u32) -> Result<()> {
        let m = match self.stack.last() {
            Some(Item::V(_, m)) => *m,
            _ => return Err(self.err(at, "PUT with an empty stack")),
        };
        self.charge_copy(at, m)?;
        if let Some(Item::V(v, m)) = self.stack.last() {
            let e = (v.clone(), *m);
            self.memo.insert(id, e);
        }
        Ok(())
    }

    fn get(&mut self, at: usize, id: u32) -> Result<()> {
        let m = match self.memo.get(&id) {
            Some((_, m)) => *m,
            None => return Err(self.err(at, format!("memo key {id} not found"))),
        };
        self.charge_copy(at, m)?;
        if let Some((v, m)) = self.memo.get(&id) {
            let item = Item::V(v.clone(), *m);
            self.stack.push(item);
        }
        Ok(())
    }

    fn pairs(&self, at: usize, v: Vec<Value>) -> Result<Vec<(Value, Value)>> {
        if v.len() & 1 == 1 {
            return Err(self.err(at, "odd number of items for a dict"));
        }
        let mut out = Vec::with_capacity(v.len() / 2);
        let mut it = v.into_iter();
        while let (Some(k), Some(x)) = (it.next(), it.next()) {
            out.push((k, x));
        }
        Ok(out)
    }

    fn reduce(&self, at: usize, f: Value, args: Value) -> Result<Value> {
        let args = match args {
            Value::Tuple(a) => a,
            _ => return Err(self.err(at, "REDUCE arguments are not a tuple")),
        };
        let (m, n) = match f {
            Value::Global(m, n) => (m, n),
            other => {
                return Err(self.err(
                    at,
                    format!("REDUCE on {} (only globals are callable)", other.kind()),
                ))
            }
        };
        let is_np = m.starts_with("numpy");
        Ok(match (m.as_str(), n.as_str()) {
            ("_codecs", "encode") => match args.first() {
                Some(Value::Str(s)) => {
                    let enc = args.get(1).and_then(Value::as_text).unwrap_or_default();
                    if enc == "latin1" || enc == "latin-1" {
                        let mut out = Vec::with_capacity(s.len());
                        for ch in s.chars() {
                            let c = u32::from(ch);
                            if c > 255 {
                                return Err(self.err(at, "non-latin-1 char in encoded bytes"));
                            }
                            out.push(c as u8);
                        }
                        Value::Bytes(out)
                    } else {
                        Value::Bytes(s.as_bytes().to_vec())
                    }
                }
                _ => return Err(self.err(at, "_codecs.encode without a string")),
            },
            (_, "dtype") if is_np => match args.first().and_then(Value::as_text) {
                Some(t) => Value::Dtype(t),
                None => return Err(self.err(at, "numpy.dtype without a type string")),
            },
            (_, "_frombuffer") if is_np => {
                // _frombuffer(buffer, dtype, shape, order)
                let data = match args.first() {
                    Some(Value::Bytes(b)) => b.clone(),
                    _ => return Err(self.err(at, "_frombuffer without in-band bytes")),
                };
                let dtype = match args.get(1) {
                    Some(Value::Dtype(d)) => d.clone(),
                    _ => return Err(self.err(at, "_frombuffer without a dtype")),
                };
                let shape = self.shape(at, args.get(2))?;
                if args.get(3).and_then(Value::as_text).as_deref() == Some("F") && shape.len() > 1 {
                    return Err(self.err(at, "Fortran-order arrays are not supported"));
                }
                self.array(at, shape, dtype, data)?
            }
            _ => Value::Object {
                class: format!("{m}.{n}"),
                args,
                state: None,
            },
        })
    }

    fn shape(&self, at: usize, v: Option<&Value>) -> Result<Vec<usize>> {
        match v {
            Some(Value::Tuple(t)) | Some(Value::List(t)) => t
                .iter()
                .map(|x| match x {
                    Value::Int(n) if *n >= 0 => Ok(*n as usize),
                    _ => Err(self.err(at, "bad array shape")),
                })
                .collect(),
            _ => Err(self.err(at, "missing array shape")),
        }
    }

    fn array(&self, at: usize, shape: Vec<usize>, dtype: String, data: Vec<u8>) -> Result<Value> {
        let d = dtype.trim_start_matches(['<', '|', '=', '>']);
        let item = d
            .get(1..)
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&w| w > 0 && w <= 16)
            .ok_or_else(|| self.err(at, format!("unsupported dtype {dtype:?}")))?;
        if dtype.starts_with('>') && item > 1 {
            return Err(self.err(at, format!("big-endian dtype {dtype:?} is not supported")));
        }
        let n = shape
            .iter()
            .try_fold(item, |a, &s| a.checked_mul(s))
            .ok_or_else(|| self.err(at, "array size overflows"))?;
        if n != data.len() {
            return Err(self.err(
                at,
                format!(
                    "array of shape {shape:?} and dtype {dtype} needs {n} bytes, payload has {}",
                    data.len()
                ),
            ));
        }
        Ok(Value::Array { shape, dtype, data })
    }

    fn build(&self, at: usize, obj: Value, state: Value) -> Result<Value> {
        match obj {
            // numpy.dtype.__setstate__((3, '<', None, ...)): the byte order lives in the state.
            Value::Dtype(t) => {
                if let Value::Tuple(s) = &state {
                    if let Some(order) = s.get(1).and_then(Value::as_text) {
                        let base = t.trim_start_matches(['<', '|', '=', '>']);
                        return Ok(Value::Dtype(format!("{order}{base}")));
                    }
                }
                Ok(Value::Dtype(t))
            }
            Value::Object { class, args, .. } if class.ends_with("._reconstruct") => {
                // ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata))
                let s = match state {
                    Value::Tuple(s) => s,
                    _ => return Err(self.err(at, "ndarray state is not a tuple")),
                };
                let off = if s.len() == 5 { 1 } else { 0 };
                if s.len() < 4 + off {
                    return Err(self.err(at, "ndarray state too short"));
                }
                let shape = self.shape(at, s.get(off))?;
                let dtype = match &s[off + 1] {
                    Value::Dtype(d) => d.clone(),
                    _ => return Err(self.err(at, "ndarray state without a dtype")),
                };
                let fortran = matches!(s[off + 2], Value::Bool(true) | Value::Int(1));
                if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
                    return Err(self.err(at, "Fortran-order arrays are not supported"));
                }
                let data = match &s[off + 3] {
                    Value::Bytes(b) => b.clone(),
                    Value::Str(t) => t.chars().map(|c| c as u32 as u8).collect(),
                    Value::List(_) => {
                        return Err(self.err(at, "object arrays are not supported"));
                    }
                    _ => return Err(self.err(at, "ndarray state without raw bytes")),
                };
                let _ = args;
                self.array(at, shape, dtype, data)
            }
            Value::Object { class, args, .. } => Ok(Value::Object {
                class,
                args,
                state: Some(Box::new(state)),
            }),
            other => Ok(other),
        }
    }
}

fn le_signed(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return Some(0);
    }
    if s.len() > 8 {
        // accept sign-extension bytes only
        let neg = s[s.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        if s[8..].iter().any(|&b| b != fill) {
            return None;
        }
        return le_signed(&s[..8]);
    }
    let mut a = if s[s.len() - 1] & 0x80 != 0 {
        [0xffu8; 8]
    } else {
        [0u8; 8]
    };
    a[..s.len()].copy_from_slice(s);
    Some(i64::from_le_bytes(a))
}

/// Decodes a protocol-0 `STRING` literal ('...' or "..." with backslash escapes).
fn unquote(l: &[u8]) -> Option<Vec<u8>> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    if l.len() < 2 || l[0] != l[l.len() - 1] || !(l[0] == b'\'' || l[0] == b'"') {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'x' => {
                let h = body.get(i..i + 2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}
