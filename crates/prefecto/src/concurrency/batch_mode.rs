//! How a `BatchTask` runs its inputs: [`BatchMode`], and the order its
//! kill switch sees them in, [`SwitchOrder`].

/// How a [`BatchTask`](super::BatchTask) keeps `size` task runs going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchMode {
    /// The seed's behaviour: submit `size` inputs, wait until every one is
    /// terminal, then submit the next `size`.
    #[default]
    Strict,
    /// Keep `size` runs in flight and start the next input as soon as any one
    /// finishes, so one straggler does not stall a whole batch.
    SlidingWindow,
}

/// The order in which a [`BatchTask`](super::BatchTask)'s kill switch is shown its finished runs.
///
/// The switch's verdict can depend on the order (a [`RateSwitch`](super::RateSwitch)
/// counts a rate from its first states), so the order decides whether a map
/// stops and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwitchOrder {
    /// A run is shown once every earlier input of the map has been shown, as
    /// the original waits for a batch's futures in order: the map stops where
    /// it would in Python, whatever order the runs finish in. The default in
    /// [`BatchMode::Strict`].
    Input,
    /// Runs are shown as they finish: the switch trips as early as it can,
    /// and its verdict depends on timing. The default with a sliding window,
    /// where showing in input order would hold the verdict back behind a
    /// straggler.
    Completion,
}
