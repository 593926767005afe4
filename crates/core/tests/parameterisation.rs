//! The parameterisation axes the paper leaves open do what they name:
//! `write.project: false` stores u itself, `read.integrate: add` is a plain
//! residual and `post_norm` normalises it, `read.bias` adds parameters on
//! W_Q, W_K, W_V only (an empty memory still reads zero), and the
//! parameters each axis removes are really absent.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use retbench_core::*;

fn cfg(project: bool, integrate: Integrate, bias: bool) -> RetentionConfig {
    let mut c = RetentionConfig::new(4);
    c.heads = 2;
    c.read = ReadConfig {
        integrate,
        bias,
        ..ReadConfig::dense()
    };
    c.write = WriteConfig {
        project,
        ..WriteConfig::append(Evict::Fifo, WriteSource::Last {})
    };
    c
}

fn names(map: &SeededVarMap) -> Vec<String> {
    let mut n: Vec<String> = map
        .varmap()
        .data()
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    n.sort();
    n
}

#[test]
fn without_projection_a_write_stores_u_itself_and_with_it_does_not() {
    let h = randn("h", &[2, 3, 8], DType::F32);
    let u = flat(&h.narrow(1, 2, 1).unwrap());
    for project in [false, true] {
        let c = cfg(project, Integrate::PostNorm, false);
        let (l, map) = layer(&c, 8, DType::F32);
        assert_eq!(names(&map).contains(&"w_u.weight".to_string()), project);
        let mut mem = l.new_memory(2, 0, DType::F32, &DEV).unwrap();
        write(&l, &h, &mut mem);
        // Slot 0 of each sample holds its write.
        let stored: Vec<f64> = (0..2)
            .flat_map(|b| flat(&mem.content().get(b).unwrap().get(0).unwrap()))
            .collect();
        if project {
            assert_ne!(stored, u);
        } else {
            assert_eq!(stored, u);
        }
    }
}

#[test]
fn add_integration_is_the_plain_residual_and_post_norm_normalises_it() {
    let x = randn("x", &[2, 3, 8], DType::F32);
    let z = randn("z", &[2, 3, 8], DType::F32);
    let h = randn("h", &[2, 3, 8], DType::F32);
    for integrate in [Integrate::Add, Integrate::PostNorm] {
        let c = cfg(false, integrate, false);
        let (l, map) = layer(&c, 8, DType::F32);
        assert_eq!(
            names(&map).iter().any(|n| n.starts_with("ln_out.")),
            integrate == Integrate::PostNorm
        );
        let mut mem = l.new_memory(2, 0, DType::F32, &DEV).unwrap();
        // Empty memory: R = 0.
        let out = l.forward(&x, &z, &mut mem).unwrap();
        let sum = flat(&(&x + &z).unwrap());
        match integrate {
            Integrate::Add => assert_eq!(flat(&out), sum),
            Integrate::PostNorm => {
                for row in flat(&out).chunks(8) {
                    let mean = row.iter().sum::<f64>() / 8.0;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0;
                    assert!(
                        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                        "{mean} {var}"
                    );
                }
            }
        }
        // With memory, the add form is X + Z + R exactly.
        write(&l, &h, &mut mem);
        let out = l.forward(&x, &z, &mut mem).unwrap();
        if integrate == Integrate::Add {
            let r = l.read(&(&x + &z).unwrap(), &mut mem).unwrap().r;
            let expect = flat(&((&x + &z).unwrap() + r).unwrap());
            for (a, b) in flat(&out).iter().zip(expect) {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
        }
    }
}

#[test]
fn read_biases_sit_on_q_k_v_only_and_change_the_read() {
    let h = randn("h", &[2, 3, 8], DType::F32);
    let q = randn("q", &[2, 3, 8], DType::F32);
    let (plain, _) = layer(&cfg(false, Integrate::Add, false), 8, DType::F32);
    let c = cfg(false, Integrate::Add, true);
    let (biased, map) = layer(&c, 8, DType::F32);
    let biases: Vec<String> = names(&map)
        .into_iter()
        .filter(|n| n.ends_with(".bias") && n.starts_with("w_"))
        .collect();
    assert_eq!(biases, ["w_k.bias", "w_q.bias", "w_v.bias"]);
    assert_eq!(
        biased.param_count(),
        plain.param_count() + 3 * 8,
        "three biases of H·d_k = 8"
    );
    let mut mem = biased.new_memory(2, 0, DType::F32, &DEV).unwrap();
    let empty = biased.read(&q, &mut mem).unwrap();
    assert!(flat(&empty.r).iter().all(|&v| v == 0.0));
    write(&biased, &h, &mut mem);
    // A value bias b_V is read as W_O·b_V on top of the unbiased readout:
    // setting it to zero must change the read.
    let with = flat(&biased.read(&q, &mut mem).unwrap().r);
    let b_v = map.varmap().data().lock().unwrap()["w_v.bias"].clone();
    b_v.set(&Tensor::zeros(8, DType::F32, &DEV).unwrap())
        .unwrap();
    let without = flat(&biased.read(&q, &mut mem).unwrap().r);
    assert_ne!(with, without);
}
