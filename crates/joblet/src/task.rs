//! What a task is: a closure run once, plus `delayed`, the joblib-style way to build one.

/// One unit of work: run once, on some worker, producing a value or an error.
///
/// Every `FnOnce() -> Result<T, E>` closure that can move to another thread is a `Job`; the
/// plain-value methods of [`crate::Parallel`] wrap `FnOnce() -> T` closures into this form.
/// Backends see only `Job`s, so a later backend can add its own kind of job (a registered
/// function with serialized arguments, for worker processes) without changing the scheduler.
pub trait Job: Send + 'static {
    /// The value of a successful run.
    type Output: Send + 'static;
    /// The error of a failed run.
    type Error: Send + 'static;
    /// Whether the job can be sent to a worker process ([`crate::Backend::Processes`]):
    /// true for [`crate::Remote`] tasks, false for closures.
    const REMOTE: bool = false;
    /// Runs the job.
    fn run(self) -> Result<Self::Output, Self::Error>;
    /// The job as a registered function name and encoded arguments, if it can be sent.
    #[doc(hidden)]
    fn into_wire(self) -> Option<crate::remote::WireJob<Self::Output, Self::Error>>
    where
        Self: Sized,
    {
        None
    }
}

impl<F, T, E> Job for F
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = T;
    type Error = E;

    #[inline]
    fn run(self) -> Result<T, E> {
        self()
    }
}

/// Arguments that can be spread into a call of `F`: tuples of up to eight values.
pub trait Args<F> {
    /// What the call returns.
    type Output;
    /// Calls `f` with the tuple's elements as its arguments.
    fn apply(self, f: F) -> Self::Output;
}

macro_rules! impl_args {
    ($($name:ident),*) => {
        impl<Func, Out, $($name),*> Args<Func> for ($($name,)*)
        where
            Func: FnOnce($($name),*) -> Out,
        {
            type Output = Out;
            #[allow(non_snake_case)]
            #[inline]
            fn apply(self, f: Func) -> Out {
                let ($($name,)*) = self;
                f($($name),*)
            }
        }
    };
}

impl_args!();
impl_args!(A);
impl_args!(A, B);
impl_args!(A, B, C);
impl_args!(A, B, C, D);
impl_args!(A, B, C, D, E);
impl_args!(A, B, C, D, E, G);
impl_args!(A, B, C, D, E, G, H);
impl_args!(A, B, C, D, E, G, H, I);

/// Captures a function and its arguments as a task, to be run later by [`crate::Parallel`]:
/// the Rust spelling of joblib's `delayed(f)(*args)`.
///
/// The arguments are a tuple (`(x,)` for one argument).
///
/// ```
/// use joblet::{delayed, Parallel};
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// let sums = Parallel::new()
///     .n_jobs(2)
///     .run((0..4u64).map(|i| delayed(add, (i, 10))))
///     .unwrap();
/// assert_eq!(sums, vec![10, 11, 12, 13]);
/// ```
pub fn delayed<F, A>(f: F, args: A) -> impl FnOnce() -> A::Output + Send + 'static
where
    A: Args<F> + Send + 'static,
    F: Send + 'static,
{
    move || args.apply(f)
}
