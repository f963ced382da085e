//! Status rules: ordered regexes that map an instrument's status line to a state.

use std::sync::Arc;

use labhours_shared::state::State;
use regex::Regex;

use crate::config::StatusRule;

/// What a matching line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatch {
    pub state: State,
    /// The rule's `sample` group, if it has one and it matched.
    pub sample: Option<Arc<str>>,
    /// Index of the rule that matched (for `probe`).
    pub rule: usize,
}

/// The compiled rules of `[status]`; the first match wins.
#[derive(Debug, Clone)]
pub struct StatusRules {
    rules: Vec<(Regex, State)>,
}

impl StatusRules {
    /// Compiles the rules (the config's `validate` has already checked them).
    pub fn new(rules: &[StatusRule]) -> Result<Self, regex::Error> {
        let rules = rules
            .iter()
            .map(|r| Ok((Regex::new(&r.pattern)?, r.state)))
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self { rules })
    }

    /// The state a line reports, or `None` when no rule matches (the line is ignored).
    pub fn classify(&self, line: &str) -> Option<StatusMatch> {
        let line = line.trim_end_matches(['\r', '\n']);
        self.rules
            .iter()
            .enumerate()
            .find_map(|(rule, (re, state))| {
                let caps = re.captures(line)?;
                Some(StatusMatch {
                    state: *state,
                    sample: caps.name("sample").map(|m| Arc::from(m.as_str())),
                    rule,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StatusRules {
        let rule = |pattern: &str, state| StatusRule {
            pattern: pattern.into(),
            state,
        };
        StatusRules::new(&[
            rule(
                r"ACQ(?:UISITION)? RUNNING(?: sample=(?P<sample>\S+))?",
                State::Running,
            ),
            rule("ERROR|FAULT", State::Fault),
            rule("IDLE|READY|RUNNING", State::Standby),
        ])
        .expect("valid")
    }

    #[test]
    fn the_first_matching_rule_wins() {
        // "ACQ RUNNING" also matches the third rule; the first one decides.
        let m = rules().classify("ACQ RUNNING").expect("matches");
        assert_eq!((m.state, m.rule), (State::Running, 0));
    }

    #[test]
    fn a_line_that_matches_no_rule_is_ignored() {
        assert_eq!(rules().classify("temperature 21.4 C"), None);
    }

    #[test]
    fn the_sample_group_is_captured() {
        let m = rules()
            .classify("ACQUISITION RUNNING sample=S-0042\r\n")
            .expect("matches");
        assert_eq!(m.sample.as_deref(), Some("S-0042"));
        assert_eq!(
            rules().classify("ACQ RUNNING").expect("matches").sample,
            None
        );
    }

    #[test]
    fn line_endings_do_not_affect_matching() {
        let anchored = StatusRules::new(&[StatusRule {
            pattern: "^READY$".into(),
            state: State::Standby,
        }])
        .expect("valid");
        assert!(anchored.classify("READY\r\n").is_some());
    }
}
