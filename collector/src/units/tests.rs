use super::*;

fn config(text: &str) -> CollectorConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

const TREE: &str = r#"
[[units]]
id = "uni"
name = "Example University"
[[units]]
id = "chem"
name = "College of Chemistry"
name_zh = "化学学院"
parent = "uni"
[[units]]
id = "nmr-lab"
name = "NMR Lab"
parent = "chem"
[[units]]
id = "phys"
name = "College of Physics"
parent = "uni"

[[instruments]]
id = "nmr-600"
name = "NMR 600"
unit = "nmr-lab"
[[instruments]]
id = "xrd-1"
name = "XRD"
unit = "chem"
[[instruments]]
id = "sem-1"
name = "SEM"
unit = "phys"
[[instruments]]
id = "loose"
name = "Unplaced"
"#;

#[test]
fn a_unit_holds_its_own_instruments_and_those_of_every_unit_below() {
    let org = Organisation::from_config(&config(TREE));
    assert!(validate(&config(TREE)).is_empty());
    assert!(org.contains("chem", "nmr-600"));
    assert!(org.contains("uni", "nmr-600"));
    assert!(org.contains("nmr-lab", "nmr-600"));
    assert!(!org.contains("phys", "nmr-600"));
    assert!(!org.contains("nmr-lab", "xrd-1"));
    assert!(
        !org.contains("uni", "loose"),
        "no unit: the site's, in no unit"
    );
    assert_eq!(org.ancestors("nmr-lab"), ["nmr-lab", "chem", "uni"]);
    let Scope::Unit(chem) = org.scope(Some("chem")) else {
        panic!("scoped")
    };
    assert_eq!(
        chem.instruments
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["nmr-600", "xrd-1"]
    );
    assert_eq!(
        chem.units.iter().map(String::as_str).collect::<Vec<_>>(),
        ["chem", "nmr-lab"]
    );
    assert_eq!(org.scope(None), Scope::All);
    assert!(Scope::All.allows("loose"));
}

#[test]
fn without_units_a_path_makes_one_unit_per_prefix() {
    let org = Organisation::from_config(&config(
        r#"
[[instruments]]
id = "nmr-600"
name = "NMR"
unit = "Chemistry/ NMR Centre/"
"#,
    ));
    assert!(org.from_paths());
    assert_eq!(org.unit_of("nmr-600"), Some("Chemistry/NMR Centre"));
    for asked in [
        "Chemistry",
        "Chemistry/NMR Centre",
        "Chemistry/ NMR Centre/",
    ] {
        let unit = org.canonical(asked).expect(asked);
        assert!(org.contains(&unit, "nmr-600"), "{asked}");
    }
    for other in [
        "Chemistry2",
        "Chem",
        "chemistry",
        "NMR Centre",
        "Chemistry/NMR Centre/Room 1",
    ] {
        assert_eq!(org.canonical(other), None, "{other}");
    }
    assert_eq!(
        org.unit("Chemistry/NMR Centre").map(|u| u.name.as_str()),
        Some("NMR Centre")
    );
}

#[test]
fn every_problem_of_the_tree_is_reported_at_once_with_key_and_fix() {
    let text = r#"
[[units]]
id = "a"
name = "A"
parent = "b"
[[units]]
id = "b"
name = "B"
parent = "a"
[[units]]
id = "c"
name = "C"
parent = "nowhere"
[[units]]
id = "c"
name = ""

[[instruments]]
id = "x"
name = "X"
unit = "zz"

[http]
listen = "127.0.0.1:8080"
[[http.tokens]]
name = "college"
role = "evaluator"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
unit = "missing"
"#;
    let errors = validate(&config(text));
    let keys: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        keys,
        [
            "units[2].parent",
            "units[3].id",
            "units[3].name",
            "units[0].parent",
            "units[1].parent",
            "instruments[0].unit",
            "http.tokens[0].unit",
        ],
        "{errors:#?}"
    );
    assert!(errors[0].problem.contains("\"nowhere\""), "{}", errors[0]);
    assert!(errors[1].problem.contains("twice"), "{}", errors[1]);
    assert!(errors[3].problem.contains("own ancestor"), "{}", errors[3]);
    assert!(
        errors[5].fix.contains("\"a\", \"b\", \"c\""),
        "{}",
        errors[5]
    );
    assert!(errors.iter().all(|e| !e.fix.is_empty()));
    // The whole config check reports them too, beside its own.
    let all = config(text).validate().expect_err("invalid");
    assert!(all.0.iter().any(|e| e.field == "http.tokens[0].unit"));
}

#[test]
fn a_scoped_token_may_name_a_path_unit_when_there_are_no_units_tables() {
    let text = r#"
[[instruments]]
id = "nmr-600"
name = "NMR"
unit = "Chemistry/NMR Centre"
[http]
listen = "127.0.0.1:8080"
[[http.tokens]]
name = "chem"
role = "admin"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
unit = "Chemistry"
"#;
    assert!(validate(&config(text)).is_empty());
}
