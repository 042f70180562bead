//! Abstention: a label only when the model is clear enough. The call is `uncertain` when the top
//! probability is under `min_top` or its margin over the second is under `min_margin`; the
//! probabilities themselves are never changed.

/// A model label (its index), or no label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Label(usize),
    Uncertain,
}

/// The word published for [`Call::Uncertain`].
pub const UNCERTAIN: &str = "uncertain";

/// The thresholds (`pipeline.abstain_min_top`, `pipeline.abstain_min_margin`); 0 and 0 never abstain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Abstention {
    pub min_top: f64,
    pub min_margin: f64,
}

impl Abstention {
    /// The call for probabilities in label order (the first of equal maxima wins, as argmax does).
    pub fn call(&self, probs: &[f64]) -> Call {
        let Some((top, p1)) = probs.iter().enumerate().fold(None, |best: Option<(usize, f64)>, (i, &p)| match best {
            Some((_, b)) if b >= p => best,
            _ => Some((i, p)),
        }) else {
            return Call::Uncertain;
        };
        let p2 = probs.iter().enumerate().filter(|(i, _)| *i != top).map(|(_, &p)| p).fold(0.0, f64::max);
        if p1 < self.min_top || p1 - p2 < self.min_margin {
            Call::Uncertain
        } else {
            Call::Label(top)
        }
    }

    /// The call's published word: a label from `labels`, or [`UNCERTAIN`].
    pub fn word<'a>(&self, call: Call, labels: &'a [String]) -> &'a str {
        match call {
            Call::Label(i) => &labels[i],
            Call::Uncertain => UNCERTAIN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Abstention = Abstention { min_top: 0.6, min_margin: 0.2 };

    #[test]
    fn a_clear_top_gets_its_label_and_a_close_or_low_one_does_not() {
        assert_eq!(A.call(&[0.1, 0.8, 0.1]), Call::Label(1));
        assert_eq!(A.call(&[0.40, 0.35, 0.25]), Call::Uncertain, "top under 0.6");
        assert_eq!(A.call(&[0.61, 0.39, 0.0]), Call::Label(0));
        assert_eq!(A.call(&[0.59, 0.41, 0.0]), Call::Uncertain, "top just under");
        let margin_only = Abstention { min_top: 0.5, ..A };
        assert_eq!(margin_only.call(&[0.55, 0.40, 0.05]), Call::Uncertain, "margin 0.15 under 0.2");
        assert_eq!(margin_only.call(&[0.55, 0.05, 0.40]), Call::Uncertain, "the second may be any label");
        assert_eq!(margin_only.call(&[0.56, 0.35, 0.09]), Call::Label(0));
    }

    #[test]
    fn thresholds_of_zero_never_abstain_and_ties_go_to_the_first_label() {
        let never = Abstention { min_top: 0.0, min_margin: 0.0 };
        assert_eq!(never.call(&[0.5, 0.5]), Call::Label(0));
        assert_eq!(A.call(&[]), Call::Uncertain);
    }
}
