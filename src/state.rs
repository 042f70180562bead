//! The daemon's state vocabulary, one `Copy` enum per kind of state, named once: the status topic,
//! the logs and the coming `state` topic all speak these words, and serde renames them only here.
//!
//! - [`DaemonState`]: is the daemon there (`status.state`).
//! - [`SourceState`]: is the frame source delivering (`status.source_state`).
//! - [`Gate`]: why predictions are or are not flowing right now (`status.gate`, schema v1).
//! - [`InputState`]: what the input shows (the clinical-signals `state` topic), with a fixed
//!   precedence for when two apply. Each [`Gate`] maps to at most one input state.

use serde::Serialize;

/// Whether the daemon is there, as `status.state` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    /// Published on every (re)connect.
    Online,
    /// The Last Will: the broker lost the connection.
    Offline,
    /// Published last on a clean exit.
    Stopped,
}

/// Whether the frame source delivers frames (`status.source_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// The daemon is loading or has not asked the source for a frame yet.
    #[default]
    Starting,
    Streaming,
    /// The device or files are not there (yet); `detail` says what is missing.
    Waiting,
    /// A replay that does not loop has delivered everything.
    Ended,
    /// Not known (the Last Will is composed before the source is asked).
    Unknown,
}

/// Why predictions are (not) being published right now (`status.gate`, schema v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Loading the model, or no frame judged yet.
    #[default]
    Starting,
    /// Frames are being inferred and published.
    Inferring,
    /// The screen is dark (or the driver says there is no video): nothing inferred.
    NoSignal,
    /// The image is unchanged (the sonographer pressed Freeze): inferred once, not again.
    Frozen,
    /// The screen is there but the ROI holds no tissue (probe lifted): nothing inferred.
    NoContact,
    /// The configured ROI does not fit the frame.
    RoiMismatch,
    /// The source delivers frames that cannot be converted.
    CorruptFrames,
    /// The source is not delivering (device absent, files missing).
    SourceWaiting,
    /// The replay finished.
    SourceEnded,
    /// The Last Will's gate: the daemon is gone.
    Offline,
    /// The final status of a clean exit.
    Stopped,
}

impl Gate {
    /// The gate of a frame in this input state (`source_waiting` is the waiting one; the replay's
    /// end is said by the capture loop itself).
    pub fn of_input(state: InputState) -> Gate {
        match state {
            InputState::Live => Gate::Inferring,
            InputState::Frozen => Gate::Frozen,
            InputState::NoContact => Gate::NoContact,
            InputState::NoSignal => Gate::NoSignal,
            InputState::RoiMismatch => Gate::RoiMismatch,
            InputState::CorruptInput => Gate::CorruptFrames,
            InputState::SourceWaiting => Gate::SourceWaiting,
        }
    }

    /// The input state this gate shows, if it is about the input at all.
    pub fn input_state(self) -> Option<InputState> {
        match self {
            Gate::Inferring => Some(InputState::Live),
            Gate::Frozen => Some(InputState::Frozen),
            Gate::NoContact => Some(InputState::NoContact),
            Gate::NoSignal => Some(InputState::NoSignal),
            Gate::RoiMismatch => Some(InputState::RoiMismatch),
            Gate::CorruptFrames => Some(InputState::CorruptInput),
            Gate::SourceWaiting | Gate::SourceEnded => Some(InputState::SourceWaiting),
            Gate::Starting | Gate::Offline | Gate::Stopped => None,
        }
    }
}

/// What the input shows, evaluated per captured frame. Only `Live` and `Frozen` images are ever
/// classified. Declared from the highest precedence to the lowest: when two apply, the one
/// further up the chain from the grabber to the tissue wins, because it explains the others (no
/// frames explains a dark screen; a dark screen explains an absent probe; a lifted probe explains
/// an unchanging image, so a frozen image of a lifted probe is `NoContact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputState {
    /// No frames arrive (device absent, stalled stream, replay finished).
    SourceWaiting,
    /// Frames arrive but cannot be used (truncated, undecodable).
    CorruptInput,
    /// No video: the driver says so, or a black / blue / "no input" screen.
    NoSignal,
    /// The configured ROI does not fit the frame (the cart changed its output size).
    RoiMismatch,
    /// The screen is there but the ROI holds no tissue (probe lifted, dark or uniform sector).
    NoContact,
    /// The ROI is unchanged (the sonographer pressed Freeze).
    Frozen,
    /// An image of tissue, changing.
    Live,
}

impl InputState {
    /// Every input state, from the highest precedence to the lowest.
    pub const BY_PRECEDENCE: [InputState; 7] = [
        InputState::SourceWaiting,
        InputState::CorruptInput,
        InputState::NoSignal,
        InputState::RoiMismatch,
        InputState::NoContact,
        InputState::Frozen,
        InputState::Live,
    ];

    /// The state that wins when both apply.
    pub fn prevailing(self, other: InputState) -> InputState {
        self.min(other)
    }

    /// True for the states whose images are classified.
    pub fn is_classified(self) -> bool {
        matches!(self, InputState::Live | InputState::Frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v).unwrap().as_str().unwrap().to_string()
    }

    #[test]
    fn input_states_serialize_to_the_published_vocabulary_in_precedence_order() {
        let names: Vec<String> = InputState::BY_PRECEDENCE.iter().map(|s| name(*s)).collect();
        assert_eq!(names, ["source_waiting", "corrupt_input", "no_signal", "roi_mismatch", "no_contact", "frozen", "live"]);
    }

    #[test]
    fn a_frozen_image_of_a_lifted_probe_is_no_contact() {
        assert_eq!(InputState::Frozen.prevailing(InputState::NoContact), InputState::NoContact);
        assert_eq!(InputState::NoContact.prevailing(InputState::Frozen), InputState::NoContact);
        assert_eq!(InputState::Live.prevailing(InputState::SourceWaiting), InputState::SourceWaiting);
    }

    #[test]
    fn only_live_and_frozen_images_are_classified() {
        let classified: Vec<InputState> = InputState::BY_PRECEDENCE.into_iter().filter(|s| s.is_classified()).collect();
        assert_eq!(classified, [InputState::Frozen, InputState::Live]);
    }

    #[test]
    fn gates_keep_the_schema_v1_names_and_map_to_input_states() {
        assert_eq!(name(Gate::CorruptFrames), "corrupt_frames");
        assert_eq!(name(Gate::SourceWaiting), "source_waiting");
        assert_eq!(name(SourceState::Starting), "starting");
        assert_eq!(name(DaemonState::Offline), "offline");
        assert_eq!(Gate::CorruptFrames.input_state(), Some(InputState::CorruptInput));
        assert_eq!(Gate::Stopped.input_state(), None);
    }

    #[test]
    fn every_input_state_has_a_gate_that_maps_back_to_it() {
        for state in InputState::BY_PRECEDENCE {
            assert_eq!(Gate::of_input(state).input_state(), Some(state));
        }
    }
}
