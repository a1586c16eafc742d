//! `NdBuffer<A, D>`: an ndarray array whose values are a [`Buffer`], so that it goes where a
//! `Buffer` goes at a `Buffer`'s speed (feature `ndarray`).
//!
//! ndarray's own serde goes value by value. An `NdBuffer` is its shape and a `Buffer` of its
//! values in standard (row-major) order, and encodes as exactly that pair, so everything
//! `Buffer` does applies unchanged: a section of its own in a persist container, mapped by
//! `load_mapped` and `Memory::mapped(true)`, and shared memory that process workers read in
//! place. Nothing here knows about files or processes.

use crate::Buffer;
use ndarray::{Array, ArrayView, ArrayViewMut, Dimension, IntoDimension, Ix1};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An n-dimensional array of plain numbers whose values are a [`Buffer`]: ndarray's `Array`
/// for [`persist`](crate::persist), [`Memory`](crate::Memory) and process workers.
///
/// Made from an [`ndarray::Array`] without a copy when the array is in standard layout
/// (others are copied into it); used through [`view`](NdBuffer::view) and
/// [`view_mut`](NdBuffer::view_mut), or turned back into an `Array` with
/// [`into_array`](NdBuffer::into_array). Cloning it is cheap (the values are shared). Its
/// values are a `Buffer`, with a `Buffer`'s behaviour: [`persist::load_mapped`] and
/// [`Memory::mapped`] map a big one from the file instead of reading it, a process worker
/// reads a big argument in the caller's shared memory, and a write to values that are
/// shared, mapped or viewed copies them first.
///
/// [`persist::load_mapped`]: crate::persist::load_mapped
/// [`Memory::mapped`]: crate::Memory::mapped
///
/// ```
/// use joblet::persist::{self, Compression};
/// use joblet::NdBuffer;
/// use ndarray::{Array2, Ix2};
///
/// let a = Array2::from_shape_fn((256, 64), |(i, j)| (i * 64 + j) as f64);
/// let nd = NdBuffer::from(a.clone()); // standard layout: the array's values, not a copy
/// assert_eq!((nd.shape(), nd.len()), (&[256, 64][..], 16_384));
/// assert_eq!(nd.view()[[2, 3]], 131.0);
///
/// let dir = std::env::temp_dir().join(format!("joblet-ndbuffer-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("a.joblet");
/// persist::dump(&nd, &path, Compression::None).unwrap();
/// // 128 KiB of values: a section of their own, mapped from the file instead of read.
/// let mut back: NdBuffer<f64, Ix2> = persist::load_mapped(&path).unwrap();
/// assert_eq!(back.view(), a.view());
/// back.view_mut()[[0, 0]] = -1.0; // copies the mapped values first: the file is unchanged
/// let owned: Array2<f64> = back.into_array();
/// assert_eq!(owned[[0, 0]], -1.0);
/// let again: NdBuffer<f64, Ix2> = persist::load(&path).unwrap();
/// assert_eq!(again.view()[[0, 0]], 0.0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct NdBuffer<A, D> {
    /// The shape; the product of its axes is `values.len()` (every constructor checks it).
    shape: D,
    /// The values, in standard (row-major) order.
    values: Buffer<A>,
}

impl<A: bytemuck::Pod, D: Dimension> NdBuffer<A, D> {
    /// An array of `shape` (`(2, 3)`, `[2, 3]`, an `Ix2`...) whose values, in row-major
    /// order, are `values`; an error if the shape does not hold exactly `values.len()`
    /// values.
    pub fn from_shape_buffer<Sh: IntoDimension<Dim = D>>(
        shape: Sh,
        values: Buffer<A>,
    ) -> Result<Self, NdShapeError> {
        let shape = shape.into_dimension();
        let holds = shape.size_checked();
        if holds != Some(values.len()) {
            return Err(NdShapeError(Kind::Values {
                shape: shape.slice().to_vec(),
                holds,
                values: values.len(),
            }));
        }
        // ndarray's own rule besides: the product of the axes longer than zero must fit in
        // an isize (an empty array of shape [0, 2^63, 2] holds 0 values, but is refused).
        if ArrayView::from_shape(shape.clone(), &values[..]).is_err() {
            return Err(NdShapeError(Kind::TooBig {
                shape: shape.slice().to_vec(),
            }));
        }
        Ok(NdBuffer { shape, values })
    }

    /// The length of each axis.
    pub fn shape(&self) -> &[usize] {
        self.shape.slice()
    }

    /// The shape as ndarray's dimension type.
    pub fn raw_dim(&self) -> D {
        self.shape.clone()
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.ndim()
    }

    /// The number of values (the product of the shape).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds no value (some axis has length 0).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The array, to read.
    pub fn view(&self) -> ArrayView<'_, A, D> {
        ArrayView::from_shape(self.shape.clone(), &self.values[..])
            .expect("the shape was checked against the values when made")
    }

    /// The array, to change in place. Values that are shared (with a clone), mapped from a
    /// file or viewed in a caller's shared memory are copied first, as for a [`Buffer`].
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, A, D> {
        ArrayViewMut::from_shape(self.shape.clone(), &mut self.values[..])
            .expect("the shape was checked against the values when made")
    }

    /// The array as an `Array`: its values without a copy when this is their only owner and
    /// they are in memory (not mapped or viewed), else a copy of them.
    pub fn into_array(self) -> Array<A, D> {
        Array::from_shape_vec(self.shape, self.values.into_inner())
            .expect("the shape was checked against the values when made")
    }

    /// The values, in row-major order.
    pub fn buffer(&self) -> &Buffer<A> {
        &self.values
    }

    /// The values, in row-major order, without the shape.
    pub fn into_buffer(self) -> Buffer<A> {
        self.values
    }
}

impl<A: bytemuck::Pod, D: Dimension> From<Array<A, D>> for NdBuffer<A, D> {
    /// Takes the array's values as they are when it is in standard layout and owns exactly
    /// them; copies them into standard layout otherwise (column-major, sliced, or a slice of
    /// a bigger allocation, which it does not keep alive).
    fn from(array: Array<A, D>) -> Self {
        let shape = array.raw_dim();
        let len = array.len();
        let values = if array.is_standard_layout() {
            let (vec, offset) = array.into_raw_vec_and_offset();
            // `None` only for an empty array.
            let start = offset.unwrap_or(0);
            if start == 0 && vec.len() == len {
                vec
            } else {
                vec[start..start + len].to_vec()
            }
        } else {
            array.iter().copied().collect()
        };
        NdBuffer {
            shape,
            values: Buffer::from(values),
        }
    }
}

impl<A: bytemuck::Pod> From<Buffer<A>> for NdBuffer<A, Ix1> {
    /// A one-dimensional array of the buffer's values (shared, not copied).
    fn from(values: Buffer<A>) -> Self {
        NdBuffer {
            shape: Ix1(values.len()),
            values,
        }
    }
}

impl<A: bytemuck::Pod, D: Dimension> From<NdBuffer<A, D>> for Array<A, D> {
    /// [`NdBuffer::into_array`].
    fn from(nd: NdBuffer<A, D>) -> Self {
        nd.into_array()
    }
}

impl<A, D: Clone> Clone for NdBuffer<A, D> {
    /// Shares the values: no copy.
    fn clone(&self) -> Self {
        NdBuffer {
            shape: self.shape.clone(),
            values: self.values.clone(),
        }
    }
}

impl<A: bytemuck::Pod + PartialEq, D: Dimension> PartialEq for NdBuffer<A, D> {
    /// The same shape and the same values.
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.values == other.values
    }
}

impl<A: bytemuck::Pod + fmt::Debug, D: Dimension> fmt::Debug for NdBuffer<A, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdBuffer")
            .field("shape", &self.shape())
            .field("values", &&self.values[..])
            .finish()
    }
}

/// How an `NdBuffer` is encoded: its shape, then its values as a `Buffer` (which is how big
/// values become sections or shared memory).
#[derive(Serialize)]
#[serde(rename = "NdBuffer", bound = "A: bytemuck::Pod")]
struct WireRef<'a, A> {
    shape: &'a [usize],
    values: &'a Buffer<A>,
}

#[derive(Deserialize)]
#[serde(rename = "NdBuffer", bound = "A: bytemuck::Pod")]
struct Wire<A> {
    shape: Vec<usize>,
    values: Buffer<A>,
}

impl<A: bytemuck::Pod, D: Dimension> Serialize for NdBuffer<A, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            shape: self.shape(),
            values: &self.values,
        }
        .serialize(serializer)
    }
}

impl<'de, A: bytemuck::Pod, D: Dimension> Deserialize<'de> for NdBuffer<A, D> {
    /// Refuses a shape with another number of axes than `D`'s, or that does not hold
    /// exactly the values that follow it, saying which (a damaged file, or a value encoded
    /// as another type).
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let Wire { shape, values } = Wire::<A>::deserialize(deserializer)?;
        if let Some(expected) = D::NDIM.filter(|&n| n != shape.len()) {
            return Err(crate::decode::refuse(NdShapeError(Kind::Axes {
                shape,
                expected,
            })));
        }
        let mut dim = D::zeros(shape.len());
        dim.slice_mut().copy_from_slice(&shape);
        NdBuffer::from_shape_buffer(dim, values).map_err(crate::decode::refuse)
    }
}

/// Why a shape and values do not make an [`NdBuffer`]: the numbers that disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdShapeError(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The shape holds `holds` values (`None`: more than a usize counts), not `values`.
    Values {
        shape: Vec<usize>,
        holds: Option<usize>,
        values: usize,
    },
    /// The shape has another number of axes than the array type.
    Axes { shape: Vec<usize>, expected: usize },
    /// The shape is beyond what ndarray can index.
    TooBig { shape: Vec<usize> },
}

impl fmt::Display for NdShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Values {
                shape,
                holds: Some(holds),
                values,
            } => write!(
                f,
                "an array of shape {shape:?} holds {holds} values, but {values} were given"
            ),
            Kind::Values {
                shape,
                holds: None,
                values,
            } => write!(
                f,
                "an array of shape {shape:?} holds more values than can be counted, but \
                 {values} were given"
            ),
            Kind::Axes { shape, expected } => write!(
                f,
                "a shape with {} axes ({shape:?}) for an array type with {expected}",
                shape.len()
            ),
            Kind::TooBig { shape } => write!(
                f,
                "an array of shape {shape:?} is too big to index (its axes longer than 0 \
                 multiply to more than isize::MAX)"
            ),
        }
    }
}

impl std::error::Error for NdShapeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{dump, load, load_mapped, Compression};
    use crate::test_support::{mapped_file, TempDir};
    use ndarray::{arr0, s, Array1, Array2, Array3, ArrayD, Ix0, Ix2, Ix3, IxDyn, ShapeBuilder};
    use std::path::Path;

    /// Dumps `array` as an NdBuffer, and checks that `load` and `load_mapped` give it back
    /// (shape and values), and that `load_mapped` maps it from the file exactly when it is
    /// big enough to be a section of its own.
    fn round_trip<A, D>(dir: &Path, name: &str, array: Array<A, D>)
    where
        A: bytemuck::Pod + PartialEq + fmt::Debug,
        D: Dimension,
    {
        let nd = NdBuffer::from(array.clone());
        assert_eq!(nd.shape(), array.shape(), "{name}");
        assert_eq!(nd.view(), array.view(), "{name}");
        let path = dir.join(name);
        dump(&nd, &path, Compression::None).unwrap();
        let read: NdBuffer<A, D> = load(&path).unwrap();
        assert_eq!(read, nd, "{name}: load");
        assert_eq!(read.view(), array.view(), "{name}: load");
        let mapped: NdBuffer<A, D> = load_mapped(&path).unwrap();
        assert_eq!(mapped, nd, "{name}: load_mapped");
        assert_eq!(mapped.into_array(), array, "{name}: load_mapped");
        let mapped: NdBuffer<A, D> = load_mapped(&path).unwrap();
        let big = std::mem::size_of_val(&nd.buffer()[..]) >= crate::persist::values::SECTION_MIN;
        let in_file = mapped_file(mapped.view().as_ptr() as usize);
        assert_eq!(
            in_file.as_deref() == path.to_str(),
            big,
            "{name}: mapped from the file ({in_file:?}) exactly when big"
        );
        let read_file = mapped_file(read.view().as_ptr() as usize);
        assert_eq!(read_file, None, "{name}: load reads, never maps");
        // A write to mapped values copies them first: the file keeps its values.
        let mut written = mapped;
        let mut mark = A::zeroed();
        bytemuck::bytes_of_mut(&mut mark).fill(0xa5);
        if let Some(first) = written.view_mut().first_mut() {
            *first = mark;
            assert_eq!(
                mapped_file(written.view().as_ptr() as usize),
                None,
                "{name}"
            );
            assert!(written.view().first() == Some(&mark), "{name}");
        }
        assert_eq!(load::<NdBuffer<A, D>>(&path).unwrap(), nd, "{name}");
    }

    #[test]
    fn ndbuffer_round_trips_through_persist_in_every_dimension_and_layout() {
        let dir = TempDir::new("ndbuffer-round");
        let d = &dir.0;
        round_trip(d, "0d", arr0(2.5f64));
        round_trip(d, "1d", Array1::from_iter(0..10i32));
        round_trip(d, "1d-big", Array1::from_iter(0..100_000u32));
        round_trip(
            d,
            "2d",
            Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as u8),
        );
        let big = Array2::from_shape_fn((300, 200), |(i, j)| (i as f64) - (j as f64) * 0.5);
        round_trip(d, "2d-big", big.clone());
        round_trip(
            d,
            "3d",
            Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as i64),
        );
        round_trip(d, "empty", Array2::<f32>::zeros((0, 5)));
        round_trip(d, "empty-3d", Array3::<u16>::zeros((4, 0, 2)));
        // Column-major, transposed, sliced and reversed inputs: copied into standard layout.
        let f = Array2::from_shape_vec((300, 200).f(), big.iter().copied().collect()).unwrap();
        assert!(!f.is_standard_layout());
        round_trip(d, "f-order", f);
        round_trip(d, "transposed", big.t().to_owned());
        let mut sliced = big.clone();
        sliced.slice_collapse(s![10..20, ..]);
        assert!(
            sliced.is_standard_layout(),
            "a window of rows keeps the layout"
        );
        round_trip(d, "rows", sliced);
        let mut strided = big.clone();
        strided.slice_collapse(s![..;2, ..;-3]);
        round_trip(d, "strided", strided);
        round_trip(
            d,
            "dyn",
            ArrayD::from_shape_fn(IxDyn(&[2, 1, 3, 2]), |i| {
                i.slice().iter().sum::<usize>() as f64
            }),
        );
    }

    #[test]
    fn ndbuffer_takes_a_standard_array_without_a_copy_and_gives_it_back() {
        let a = Array2::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f64);
        let p = a.as_ptr();
        let nd = NdBuffer::from(a);
        assert_eq!(nd.view().as_ptr(), p, "standard layout: the same values");
        let shared = nd.clone();
        assert_eq!(shared.view().as_ptr(), p, "a clone shares them");
        let mut written = shared.clone();
        written.view_mut()[[0, 0]] = -1.0;
        assert_ne!(
            written.view().as_ptr(),
            p,
            "a write to shared values copies"
        );
        assert_eq!((nd.view()[[0, 0]], written.view()[[0, 0]]), (0.0, -1.0));
        drop(shared);
        let back = nd.into_array();
        assert_eq!(
            back.as_ptr(),
            p,
            "the only owner gets its values back, no copy"
        );
        assert_eq!(back.shape(), &[4, 5]);

        // A window of rows of a bigger array is copied out: the rest is not kept alive.
        let mut rows = Array2::<u8>::zeros((100, 10));
        rows.slice_collapse(s![50..52, ..]);
        let nd = NdBuffer::from(rows);
        assert_eq!((nd.shape(), nd.len()), (&[2, 10][..], 20));

        let ramp: NdBuffer<u16, _> = NdBuffer::from(Buffer::from(vec![1u16, 2, 3]));
        assert_eq!((ramp.shape(), ramp.ndim()), (&[3][..], 1));
        let grid = NdBuffer::from_shape_buffer((2, 3), Buffer::from(vec![0i32; 6])).unwrap();
        assert_eq!(grid.raw_dim(), ndarray::Dim([2, 3]));
        assert_eq!(
            format!(
                "{:?}",
                NdBuffer::from_shape_buffer([1, 2], Buffer::from(vec![7u8, 8])).unwrap()
            ),
            "NdBuffer { shape: [1, 2], values: [7, 8] }"
        );
        let zero = NdBuffer::<f64, Ix0>::from(arr0(1.5));
        assert_eq!(
            (zero.shape(), zero.len(), zero.view()[()]),
            (&[][..], 1, 1.5)
        );
        assert!(NdBuffer::<f64, Ix2>::from(Array2::zeros((0, 3))).is_empty());
    }

    #[test]
    fn ndbuffer_shapes_that_do_not_fit_the_values_are_refused_with_the_numbers() {
        let err = NdBuffer::from_shape_buffer((2, 3), Buffer::from(vec![0f64; 5])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an array of shape [2, 3] holds 6 values, but 5 were given"
        );
        let huge = NdBuffer::<u8, Ix2>::from_shape_buffer((usize::MAX, 2), Buffer::default());
        assert!(huge
            .unwrap_err()
            .to_string()
            .contains("more values than can be counted"));
        let empty = NdBuffer::<u8, Ix3>::from_shape_buffer((0, 1 << 62, 8), Buffer::default());
        assert!(empty.unwrap_err().to_string().contains("too big to index"));

        // A stored shape that does not fit its values (a damaged file, hand-built here as
        // the same pair with the wrong shape): persist's error gives the numbers, small
        // values (in the object stream) and big ones (a section, read or mapped) alike.
        #[derive(Serialize)]
        struct Forged {
            shape: Vec<usize>,
            values: Buffer<f64>,
        }
        let dir = TempDir::new("ndbuffer-damaged");
        let path = dir.0.join("forged.joblet");
        for n in [5usize, 100_001] {
            let forged = Forged {
                shape: vec![n + 1, 1],
                values: Buffer::from(vec![1.0; n]),
            };
            dump(&forged, &path, Compression::None).unwrap();
            let want = format!(
                "shape [{}, 1] holds {} values, but {n} were given",
                n + 1,
                n + 1
            );
            for err in [
                load::<NdBuffer<f64, Ix2>>(&path).unwrap_err().to_string(),
                load_mapped::<NdBuffer<f64, Ix2>>(&path)
                    .unwrap_err()
                    .to_string(),
            ] {
                assert!(
                    err.contains(&want) && err.contains("forged.joblet"),
                    "{err}"
                );
            }
            // Another number of axes than the type's.
            let err = load::<NdBuffer<f64, Ix3>>(&path).unwrap_err().to_string();
            let want = format!(
                "a shape with 2 axes ([{}, 1]) for an array type with 3",
                n + 1
            );
            assert!(err.contains(&want), "{err}");
            // A dynamic type takes any number of axes, and still checks the values.
            let err = load::<NdBuffer<f64, IxDyn>>(&path).unwrap_err().to_string();
            assert!(err.contains("holds"), "{err}");
        }
        // The same, straight from postcard's bytes, as a worker decodes its arguments.
        let bytes = postcard::to_stdvec(&(vec![3usize], Buffer::from(vec![1u32, 2]))).unwrap();
        let err = crate::decode::from_bytes::<NdBuffer<u32, Ix1>>(&bytes).unwrap_err();
        assert_eq!(
            err,
            "an array of shape [3] holds 3 values, but 2 were given"
        );
        let good = postcard::to_stdvec(&(vec![2usize], Buffer::from(vec![1u32, 2]))).unwrap();
        let nd = crate::decode::from_bytes::<NdBuffer<u32, Ix1>>(&good).unwrap();
        assert_eq!(nd.view().to_vec(), vec![1, 2]);
    }

    crate::cached_fn! {
        fn ndbuffer_table(rows: usize, cols: usize) -> NdBuffer<f64, Ix2> {
            TABLE_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            NdBuffer::from(Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f64))
        }
    }

    crate::cached_fn! {
        fn ndbuffer_row_sums(x: NdBuffer<f64, Ix2>) -> NdBuffer<f64, Ix1> {
            SUM_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            NdBuffer::from(x.view().sum_axis(ndarray::Axis(1)))
        }
    }

    static TABLE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static SUM_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn ndbuffer_results_of_memory_are_hits_and_mapped_hits_are_mappings() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = TempDir::new("ndbuffer-memory");
        let calls = || TABLE_CALLS.load(SeqCst);
        let before = calls();
        let memory = crate::Memory::new(&dir.0).unwrap();
        let made = ndbuffer_table::cached(&memory, 200, 100).unwrap();
        assert_eq!(calls() - before, 1, "a miss computes");
        let read = ndbuffer_table::cached(&memory, 200, 100).unwrap();
        assert_eq!(calls() - before, 1, "a hit does not");
        assert_eq!(read, made);
        assert_eq!(
            mapped_file(read.view().as_ptr() as usize),
            None,
            "read, not mapped"
        );

        let mapped = crate::Memory::new(&dir.0).unwrap().mapped(true);
        let hit = ndbuffer_table::cached(&mapped, 200, 100).unwrap();
        assert_eq!(calls() - before, 1, "a mapped hit does not compute either");
        assert_eq!(hit, made);
        assert_eq!(hit.shape(), &[200, 100]);
        let file = mapped_file(hit.view().as_ptr() as usize);
        assert!(
            file.as_deref()
                .is_some_and(|f| f.ends_with("output.joblet")),
            "the hit's values are a mapping of the stored file: {file:?}"
        );

        // As an argument, an NdBuffer is keyed by its content: the same values in another
        // allocation hit, the same values in another shape do not.
        let grid = |rows: usize, cols: usize| {
            NdBuffer::from_shape_buffer((rows, cols), (0..12).map(f64::from).collect()).unwrap()
        };
        let sums = ndbuffer_row_sums::cached(&memory, grid(3, 4)).unwrap();
        assert_eq!(sums.view().to_vec(), vec![6.0, 22.0, 38.0]);
        let before = SUM_CALLS.load(SeqCst);
        assert_eq!(
            ndbuffer_row_sums::cached(&memory, grid(3, 4)).unwrap(),
            sums
        );
        assert_eq!(SUM_CALLS.load(SeqCst), before, "equal values: a hit");
        let other = ndbuffer_row_sums::cached(&memory, grid(4, 3)).unwrap();
        assert_eq!(other.len(), 4);
        assert_eq!(SUM_CALLS.load(SeqCst), before + 1, "another shape: a miss");
    }
}
