//! The one-copy path for vectors and slices of fixed-size numbers (see the crate's docs).
use super::*;

/// Calls the macro `$each` with every number type whose bincode encoding is its memory here.
macro_rules! with_numbers {
    ($each:ident) => {
        if cfg!(target_endian = "little") {
            $each!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);
            if std::mem::size_of::<usize>() == 8 {
                // bincode writes usize and isize as 64-bit integers.
                $each!(usize, isize);
            }
        }
    };
}

/// The element count and memory of `value` if it is a `Vec` or slice of numbers.
pub fn as_bytes<T: ?Sized + 'static>(value: &T) -> Option<(usize, &[u8])> {
    macro_rules! try_number {
        ($($number:ty),*) => {$(
            if TypeId::of::<T>() == TypeId::of::<Vec<$number>>() {
                // SAFETY: `T` is `Vec<$number>`: the type ids are equal.
                let vector = unsafe { &*(value as *const T).cast::<Vec<$number>>() };
                return Some((vector.len(), memory_of(vector.as_slice())));
            }
            if TypeId::of::<T>() == TypeId::of::<[$number]>() {
                let count = std::mem::size_of_val(value) / std::mem::size_of::<$number>();
                // SAFETY: `T` is `[$number]`, so `value` points at `count` numbers.
                let slice = unsafe {
                    std::slice::from_raw_parts((value as *const T).cast::<$number>(), count)
                };
                return Some((count, memory_of(slice)));
            }
        )*};
    }
    with_numbers!(try_number);
    None
}

/// Reads `path` as a `T` if `T` is a `Vec` of numbers: `None` for any other type.
pub fn read<T: 'static>(path: &str) -> Option<Result<T, TransferError>> {
    macro_rules! try_number {
        ($($number:ty),*) => {$(
            if TypeId::of::<T>() == TypeId::of::<Vec<$number>>() {
                let vector = read_vec::<$number>(path, std::any::type_name::<T>());
                return vector.map(|v| (Box::new(v) as Box<dyn Any>).downcast::<T>().ok().map(|b| *b)).transpose();
            }
        )*};
    }
    with_numbers!(try_number);
    None
}

/// The bytes of a slice of numbers (no padding, every bit pattern valid).
fn memory_of<N: Copy>(numbers: &[N]) -> &[u8] {
    // SAFETY: numbers are plain bytes; the length is the slice's size in bytes.
    unsafe {
        std::slice::from_raw_parts(
            numbers.as_ptr().cast::<u8>(),
            std::mem::size_of_val(numbers),
        )
    }
}

fn read_vec<N: Copy + Default>(
    path: &str,
    type_name: &'static str,
) -> Result<Vec<N>, TransferError> {
    let io = |error| TransferError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut header = [0u8; 8];
    file.read_exact(&mut header).map_err(io)?;
    let count = u64::from_le_bytes(header);
    let width = std::mem::size_of::<N>() as u64;
    if count.checked_mul(width).and_then(|n| n.checked_add(8)) != Some(file_len) {
        return Err(TransferError::Decode {
            path: path.to_owned(),
            type_name,
            error: Box::new(bincode::ErrorKind::Custom(format!(
                "{count} items of {width} bytes do not fill {file_len} bytes"
            ))),
        });
    }
    // `vec![0; n]` of numbers asks the allocator for zeroed pages, which costs nothing.
    let mut numbers = vec![N::default(); count as usize];
    // SAFETY: as in `memory_of`, and every bit pattern is a valid number.
    let memory = unsafe {
        std::slice::from_raw_parts_mut(
            numbers.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(numbers.as_slice()),
        )
    };
    file.read_exact(memory).map_err(io)?;
    Ok(numbers)
}

/// Decodes `bytes` as a `T` if `T` is a `Vec` of numbers (one copy): `None` for any other type.
pub fn from_bytes<T: 'static>(bytes: &[u8]) -> Option<Result<T, String>> {
    macro_rules! try_number {
        ($($number:ty),*) => {$(
            if TypeId::of::<T>() == TypeId::of::<Vec<$number>>() {
                let vector = vec_from_bytes::<$number>(bytes);
                return Some(vector.and_then(|v| {
                    (Box::new(v) as Box<dyn Any>)
                        .downcast::<T>()
                        .map(|b| *b)
                        .map_err(|_| "a vector of another type".to_owned())
                }));
            }
        )*};
    }
    with_numbers!(try_number);
    None
}

fn vec_from_bytes<N: Copy + Default>(bytes: &[u8]) -> Result<Vec<N>, String> {
    let (header, memory) = bytes
        .split_at_checked(8)
        .ok_or_else(|| format!("{} bytes hold no length", bytes.len()))?;
    let count = u64::from_le_bytes(header.try_into().unwrap_or_default());
    let width = std::mem::size_of::<N>() as u64;
    if count.checked_mul(width) != Some(memory.len() as u64) {
        return Err(format!(
            "{count} items of {width} bytes do not fill {} bytes",
            memory.len()
        ));
    }
    let mut numbers = vec![N::default(); count as usize];
    // SAFETY: as in `memory_of`, and every bit pattern is a valid number.
    let target = unsafe {
        std::slice::from_raw_parts_mut(
            numbers.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(numbers.as_slice()),
        )
    };
    target.copy_from_slice(memory);
    Ok(numbers)
}
