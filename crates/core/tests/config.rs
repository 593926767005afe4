//! The retention block as a suite YAML states it: shorthand and tagged forms,
//! strict rejection of unknown keys, and value validation.

use retbench_core::*;

fn parse(yaml: &str) -> Result<RetentionConfig, String> {
    serde_saphyr::from_str::<RetentionConfig>(yaml).map_err(|e| e.to_string())
}

#[test]
fn design_example_parses() {
    let c = parse(
        "slots: 128\nread: { kind: dense }\nwrite: { kind: append, evict: fifo, source: token }\ngate: { kind: none }\n",
    )
    .unwrap();
    assert_eq!(c.slots, 128);
    assert_eq!(
        c.write,
        WriteConfig::append(Evict::Fifo, WriteSource::Token {})
    );
    c.validate().unwrap();
}

#[test]
fn every_axis_parses_in_both_forms() {
    let c = parse(
        "slots: 64\nheads: 4\nread: { kind: topk, k: 8 }\n\
         write: { kind: attention, rate: 0.25, erase: false, source: { kind: chunk, size: 4 } }\n\
         gate: { kind: surprise, threshold: 0.2 }\nkeys: cached\n\
         slot_age: { kind: learned, buckets: 8 }\nsharing: shared\npersistence: disk\n",
    )
    .unwrap();
    assert_eq!(c.read, ReadConfig::topk(8));
    assert_eq!(c.write.source, WriteSource::Chunk { size: 4 });
    // Defaults: the paper's integration and write point, no read biases,
    // no W_u (documented in docs/AXES.md).
    assert_eq!(c.read.integrate, Integrate::PostNorm);
    assert!(!c.read.bias);
    assert!(!c.write.project);
    assert_eq!(c.write.from, WriteFrom::Output);
    assert_eq!(c.init, InitConfig::Candle {});
    let p = parse(
        "slots: 8\nread: { kind: topk, k: 2, integrate: add, bias: true }\n\
         write: { kind: append, project: true, from: input }\n",
    )
    .unwrap();
    assert_eq!(p.read.integrate, Integrate::Add);
    assert!(p.read.bias);
    assert!(p.write.project);
    assert_eq!(p.write.from, WriteFrom::Input);
    assert_ne!(
        p.hash(),
        parse("slots: 8\nread: { kind: topk, k: 2 }\n")
            .unwrap()
            .hash()
    );
    assert_eq!(c.slot_age, SlotAge::Learned { buckets: 8 });
    let short = parse("slots: 4\nread: dense\ngate: learned\nslot_age: none\nwrite: { kind: append, evict: lru, source: learned }\n").unwrap();
    assert_eq!(short.gate, GateConfig::Learned {});
    assert_eq!(short.write.source, WriteSource::Learned {});
    // Round trip through the canonical (tagged) form.
    let yaml = serde_saphyr::to_string(&c).unwrap();
    assert_eq!(parse(&yaml).unwrap(), c);
}

#[test]
fn unknown_keys_and_bad_kinds_are_errors_with_a_line() {
    let err = parse("slots: 4\nread: { kind: dense, k: 3 }\n").unwrap_err();
    assert!(err.contains('2'), "{err}");
    let err = parse("slots: 4\nwrite: { kind: append, evcit: fifo }\n").unwrap_err();
    assert!(err.contains("evcit"), "{err}");
    assert!(
        parse("slots: 4\nread: sparse\n")
            .unwrap_err()
            .contains("sparse")
    );
    assert!(parse("slots: 4\nbogus: 1\n").unwrap_err().contains("bogus"));
    assert!(parse("slots: -3\n").is_err());
}

#[test]
fn invalid_values_are_rejected_by_validate() {
    let check = |yaml: &str, field: &str| {
        let err = parse(yaml).unwrap().validate().unwrap_err().to_string();
        assert!(err.starts_with(field), "{field} in {err}");
    };
    check("slots: 0\n", "slots");
    check("slots: 4\nread: { kind: topk, k: 5 }\n", "read.k");
    check(
        "slots: 4\nwrite: { kind: attention, rate: 1.5 }\n",
        "write.rate",
    );
    check(
        "slots: 4\ngate: { kind: feedback, threshold: 0 }\n",
        "gate.threshold",
    );
    check(
        "slots: 4\nwrite: { kind: append, source: { kind: chunk, size: 0 } }\n",
        "write.source.size",
    );
}

#[test]
fn the_hash_tracks_every_field() {
    let a = RetentionConfig::new(8);
    let mut b = a.clone();
    assert_eq!(a.hash(), b.hash());
    b.keys = KeyMode::Cached;
    assert_ne!(a.hash(), b.hash());
}

#[test]
fn every_catalog_entry_parses_and_validates() {
    for e in config::CATALOG {
        let (parent, leaf) = match e.axis.split_once('.') {
            Some((p, l)) => (p, Some(l)),
            None => (e.axis, None),
        };
        let yaml = match leaf {
            None if parent == "read" && e.yaml.contains("topk") => {
                format!("slots: 64\nread: {}\n", e.yaml)
            }
            // An index over cached keys says so in its entry's about.
            None if parent == "read" && e.yaml.contains("ivf") => {
                assert!(e.about.contains("keys: cached"), "{}", e.about);
                format!("slots: 64\nkeys: cached\nread: {}\n", e.yaml)
            }
            None => format!("slots: 64\n{parent}: {}\n", e.yaml),
            Some(l) => format!("slots: 64\n{parent}: {{ kind: append, {l}: {} }}\n", e.yaml),
        };
        let c = parse(&yaml).unwrap_or_else(|err| panic!("{yaml}: {err}"));
        c.validate().unwrap_or_else(|err| panic!("{yaml}: {err}"));
    }
}

#[test]
fn layers_are_all_or_a_list_and_resolve_against_the_model() {
    assert_eq!(parse("slots: 4\n").unwrap().layers, Layers::All);
    let c = parse("slots: 4\nlayers: [1, 0, 1]\n").unwrap();
    assert_eq!(c.layers.resolve(2).unwrap(), vec![0, 1]);
    assert_eq!(
        parse("slots: 4\nlayers: all\n")
            .unwrap()
            .layers
            .resolve(3)
            .unwrap(),
        vec![0, 1, 2]
    );
    let err = c.layers.resolve(1).unwrap_err().to_string();
    assert!(err.contains("layers") && err.contains("block 1"), "{err}");
    for bad in ["layers: some", "layers: []", "layers: [-1]"] {
        let err = parse(&format!("slots: 4\n{bad}\n")).unwrap_err();
        assert!(err.contains("line 2") || err.contains('2'), "{bad}: {err}");
    }
    // The default is not serialized, so configs written before the field
    // existed keep their hash.
    assert_eq!(
        parse("slots: 4\n").unwrap().hash(),
        parse("slots: 4\nlayers: all\n").unwrap().hash()
    );
    let yaml = serde_saphyr::to_string(&c).unwrap();
    assert_eq!(parse(&yaml).unwrap(), c);
}

#[test]
fn init_options_draw_what_they_name() {
    use candle_core::{DType, Device};
    use retbench_core::{InitConfig, RetentionConfig, SeededVarMap};
    let stats = |init: InitConfig, name: &str| -> (f64, f64, f64) {
        let map = SeededVarMap::new(candle_nn::VarMap::new(), "init", 0);
        let vb = map.var_builder(DType::F32, &Device::Cpu);
        let lin = init.linear(256, 128, true, 0.5, vb.pp(name)).unwrap();
        let w: Vec<f32> = lin.weight().flatten_all().unwrap().to_vec1().unwrap();
        let n = w.len() as f64;
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let max = w.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
        (mean, var.sqrt(), max)
    };
    let bound = 1.0 / 256f64.sqrt();
    let (_, sd, max) = stats(InitConfig::Torch {}, "t");
    assert!(
        max <= bound,
        "torch: |w| {max} beyond 1/sqrt(fan_in) {bound}"
    );
    assert!(
        (sd - bound / 3f64.sqrt()).abs() < 0.05 * bound,
        "torch: sd {sd}"
    );
    let (_, sd, _) = stats(InitConfig::Candle {}, "c");
    assert!(
        (sd - (2.0f64 / 256.0).sqrt()).abs() < 0.05 * sd,
        "candle: sd {sd}"
    );
    let (mean, sd, _) = stats(InitConfig::Normal { std: 0.02 }, "n");
    assert!(
        mean.abs() < 1e-3 && (sd - 0.01).abs() < 5e-4,
        "normal, scaled 0.5: sd {sd}"
    );
    // Bare names parse; the default changes no hash.
    let cfg: RetentionConfig = serde_saphyr::from_str("slots: 8\ninit: torch\n").unwrap();
    assert_eq!(cfg.init, InitConfig::Torch {});
    assert_ne!(cfg.hash(), RetentionConfig::new(8).hash());
    let plain: RetentionConfig = serde_saphyr::from_str("slots: 8\ninit: candle\n").unwrap();
    assert_eq!(plain.hash(), RetentionConfig::new(8).hash());
    let bad: RetentionConfig =
        serde_saphyr::from_str("slots: 8\ninit: { kind: normal, std: 0 }\n").unwrap();
    assert!(bad.validate().unwrap_err().to_string().contains("init.std"));
}
