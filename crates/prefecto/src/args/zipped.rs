//! A map's arguments zipped into one set of arguments per input: all at
//! hand ([`ListedInputs`], read one at a time as the map goes), or as an
//! argument's async stream gives them.

use futures::stream::BoxStream;

use super::MapError;
use crate::inputs::RunArgs;

/// The arguments of every input of a `map`, zipped.
///
/// ```
/// use prefecto::args::{MapArgs, Zipped};
/// use prefecto::prelude::*;
///
/// let listed = (vec![1, 2, 3], unmapped(10)).into_inputs(&["a", "b"]).unwrap();
/// assert!(matches!(listed, Zipped::Listed(inputs) if inputs.len() == 3));
///
/// let streamed = (from_stream(futures::stream::iter(1..=3)), unmapped(10))
///     .into_inputs(&["a", "b"])
///     .unwrap();
/// assert!(matches!(streamed, Zipped::Streamed { param: "a", .. }));
/// ```
#[non_exhaustive]
pub enum Zipped<Args> {
    /// All of them, at hand: every argument's length is known and checked.
    Listed(ListedInputs<Args>),
    /// Read as an argument's stream gives them: a map with a
    /// [`from_stream`](crate::stream_args::from_stream) argument. The
    /// lengths of the others were checked; the stream's is found when it
    /// ends, as [`MapError::UnequalLengths`] if it differs.
    Streamed {
        /// The inputs, as they come.
        inputs: BoxStream<'static, Result<RunArgs<Args>, MapError>>,
        /// The first parameter given a stream.
        param: &'static str,
    },
}

/// The inputs of a map whose arguments are all at hand, each input's
/// arguments zipped from its columns as it is read: a map of a million
/// inputs holds its arguments once (as the columns they were given as),
/// not also as a list of a million zipped inputs. Reading one clones the
/// [`unmapped`](crate::unmapped) values for it.
///
/// ```
/// use prefecto::args::{MapArgs, Zipped};
/// use prefecto::inputs::RunArgs;
/// use prefecto::prelude::*;
///
/// let Ok(Zipped::Listed(inputs)) = (1..=3, unmapped('x')).into_inputs(&["a", "b"]) else {
///     unreachable!("every argument is at hand")
/// };
/// assert_eq!(inputs.len(), 3);
/// let zipped: Vec<(i32, char)> = inputs
///     .map(|args| match args {
///         RunArgs::Ready(args) => args,
///         _ => unreachable!("values, not futures"),
///     })
///     .collect();
/// assert_eq!(zipped, [(1, 'x'), (2, 'x'), (3, 'x')]);
/// ```
pub struct ListedInputs<Args> {
    /// Zips the next input from the columns; called once per input, and
    /// never after the last (the columns' lengths were checked).
    zip_next: Box<dyn FnMut() -> RunArgs<Args> + Send>,
    left: usize,
    clones: bool,
}

impl<Args> ListedInputs<Args> {
    /// `len` inputs, each zipped by `zip_next`, which `clones` unmapped
    /// values (or not: it runs none of the user's code).
    pub(crate) fn new(
        len: usize,
        zip_next: Box<dyn FnMut() -> RunArgs<Args> + Send>,
        clones: bool,
    ) -> Self {
        ListedInputs {
            zip_next,
            left: len,
            clones,
        }
    }

    /// Whether reading an input clones an unmapped value: the user's
    /// `Clone`, which may panic.
    pub(crate) fn clones(&self) -> bool {
        self.clones
    }
}

impl<Args> Iterator for ListedInputs<Args> {
    type Item = RunArgs<Args>;

    fn next(&mut self) -> Option<RunArgs<Args>> {
        self.left = self.left.checked_sub(1)?;
        Some((self.zip_next)())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<Args> ExactSizeIterator for ListedInputs<Args> {}
