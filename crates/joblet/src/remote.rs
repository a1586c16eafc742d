//! Functions that worker processes can run: registered by a stable name, called with serde
//! arguments, returning serde results.
//!
//! A closure cannot cross a process boundary, so [`crate::Backend::Processes`] runs *registered
//! functions*: [`remote_fn!`](crate::remote_fn) defines a function and registers it under its
//! module path; its `task(..)` builds a [`Remote`] job that any backend can run.

use crate::task::Job;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A call of a registered function with its arguments: a [`Job`] that runs in place on the
/// sequential and thread backends, and is sent by name to a worker on the process backend.
///
/// Made by the `task` function that [`remote_fn!`](crate::remote_fn) generates.
pub struct Remote<A, T, E> {
    name: &'static str,
    call: fn(A) -> Result<T, E>,
    args: A,
}

impl<A, T, E> Remote<A, T, E> {
    #[doc(hidden)]
    pub fn new(name: &'static str, call: fn(A) -> Result<T, E>, args: A) -> Self {
        Remote { name, call, args }
    }

    /// The name the function is registered under (its module path).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, T, E> Job for Remote<A, T, E>
where
    A: Serialize + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    type Output = T;
    type Error = E;
    const REMOTE: bool = true;

    fn run(self) -> Result<T, E> {
        (self.call)(self.args)
    }

    fn into_wire(self) -> Option<WireJob<T, E>> {
        Some(WireJob {
            function: self.name,
            args: Box::new(EncodeArgs(self.args)),
            decode_value: |bytes| crate::decode::from_bytes(bytes),
            decode_error: |bytes| crate::decode::from_bytes(bytes),
        })
    }
}

/// Encodes `value` into a buffer allocated once at its exact size. (Growing a buffer while
/// encoding an 8 MB argument copied it several times over and faulted in fresh pages each
/// time: most of the parent's cost per big task, measured with perf.)
fn encode_exact<T: Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(value)?;
    let mut buf = vec![0u8; size];
    let used = postcard::to_slice(value, &mut buf)?.len();
    buf.truncate(used);
    Ok(buf)
}

/// A task's arguments, ready to be encoded straight into a frame.
pub(crate) trait WireArgs: Send {
    /// The size of the encoding.
    fn encoded_len(&self) -> Result<usize, String>;
    /// Encodes into `out`, which is exactly `encoded_len()` bytes long.
    fn encode_into(&self, out: &mut [u8]) -> Result<(), String>;
}

struct EncodeArgs<A>(A);

impl<A: Serialize + Send> WireArgs for EncodeArgs<A> {
    fn encoded_len(&self) -> Result<usize, String> {
        postcard::experimental::serialized_size(&self.0).map_err(|e| e.to_string())
    }

    fn encode_into(&self, out: &mut [u8]) -> Result<(), String> {
        postcard::to_slice(&self.0, out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A job ready for the wire: the function's name, its arguments, and how to decode what
/// comes back.
#[doc(hidden)]
pub struct WireJob<T, E> {
    pub(crate) function: &'static str,
    pub(crate) args: Box<dyn WireArgs>,
    pub(crate) decode_value: fn(&[u8]) -> Result<T, String>,
    pub(crate) decode_error: fn(&[u8]) -> Result<E, String>,
}

/// What a registered function's entry point returns in the worker.
#[doc(hidden)]
pub enum Called {
    /// The encoded value.
    Value(Vec<u8>),
    /// The encoded error the function returned.
    Error(Vec<u8>),
    /// The call could not be made or its outcome not encoded.
    Broken(String),
}

/// A registered function, as a worker finds it by name.
#[doc(hidden)]
pub struct Registered {
    pub name: &'static str,
    pub call: fn(&[u8]) -> Called,
}

inventory::collect!(Registered);

/// Finds a registered function by name (in the worker).
pub(crate) fn lookup(name: &str) -> Option<fn(&[u8]) -> Called> {
    static TABLE: OnceLock<HashMap<&'static str, fn(&[u8]) -> Called>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            inventory::iter::<Registered>
                .into_iter()
                .map(|r| (r.name, r.call))
                .collect()
        })
        .get(name)
        .copied()
}

/// Decodes the arguments, calls `f`, encodes its outcome: the body of every registered
/// function's entry point.
#[doc(hidden)]
pub fn call_encoded<A, T, E>(args: &[u8], f: impl FnOnce(A) -> Result<T, E>) -> Called
where
    A: DeserializeOwned,
    T: Serialize,
    E: Serialize,
{
    let args: A = match crate::decode::from_bytes(args) {
        Ok(a) => a,
        Err(e) => return Called::Broken(format!("cannot decode the arguments: {e}")),
    };
    match f(args) {
        Ok(v) => encode_exact(&v).map_or_else(
            |e| Called::Broken(format!("cannot encode the result: {e}")),
            Called::Value,
        ),
        Err(err) => encode_exact(&err).map_or_else(
            |e| Called::Broken(format!("cannot encode the error: {e}")),
            Called::Error,
        ),
    }
}

/// Defines a function that worker processes can run, and registers it under its module path.
///
/// Besides the function itself, it defines a module of the same name with
/// `task(args..)`, which makes a [`Remote`] job for [`crate::Parallel`], and `NAME`. A function
/// written as returning `Result<T, E>` fails the call with its `E` ([`crate::Error::Task`]);
/// arguments, `T` and `E` must be serde types. Use it at module level (not inside a function
/// body), where the worker process can find the registration.
///
/// ```
/// joblet::remote_fn! {
///     /// The square of `x`.
///     pub fn square(x: u64) -> u64 { x * x }
/// }
///
/// fn main() {
///     joblet::worker_hook();
///     let out = joblet::Parallel::new().n_jobs(2).try_run((0..4).map(square::task)).unwrap();
///     assert_eq!(out, vec![0, 1, 4, 9]);
///     assert!(square::NAME.ends_with("::square"));
/// }
/// ```
#[macro_export]
macro_rules! remote_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> Result<$ok:ty, $err:ty> $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> Result<$ok, $err> $body

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, unused_imports)]
        $vis mod $name {
            use super::*;
            /// The name worker processes know this function by.
            pub const NAME: &str = module_path!();
            /// A job that calls the function with these arguments.
            pub fn task($($arg: $ty),*) -> $crate::Remote<($($ty,)*), $ok, $err> {
                $crate::Remote::new(NAME, |($($arg,)*)| super::$name($($arg),*), ($($arg,)*))
            }
            fn entry(args: &[u8]) -> $crate::__private::Called {
                $crate::__private::call_encoded(args, |($($arg,)*): ($($ty,)*)| super::$name($($arg),*))
            }
            $crate::__private::inventory::submit! {
                $crate::__private::Registered { name: NAME, call: entry }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret $body

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, unused_imports)]
        $vis mod $name {
            use super::*;
            /// The name worker processes know this function by.
            pub const NAME: &str = module_path!();
            /// A job that calls the function with these arguments.
            pub fn task($($arg: $ty),*) -> $crate::Remote<($($ty,)*), $ret, $crate::__private::Never> {
                $crate::Remote::new(NAME, |($($arg,)*)| Ok(super::$name($($arg),*)), ($($arg,)*))
            }
            fn entry(args: &[u8]) -> $crate::__private::Called {
                $crate::__private::call_encoded::<_, _, $crate::__private::Never>(
                    args,
                    |($($arg,)*): ($($ty,)*)| Ok(super::$name($($arg),*)),
                )
            }
            $crate::__private::inventory::submit! {
                $crate::__private::Registered { name: NAME, call: entry }
            }
        }
    };
}

/// The error type of infallible remote functions: no value exists, yet it is a serde type
/// (`Infallible` is not).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}
