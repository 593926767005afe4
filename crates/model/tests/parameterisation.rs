//! `write.from`: a retention layer writes from its block's input X or its
//! output X̃. The input of block 1 does not depend on block 1's read, the
//! output does: so what an `input` layer writes is the same whether its
//! memory is empty or full, and what an `output` layer writes is not.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use retbench_core::{
    Evict, Layers, RetentionConfig, SeededVarMap, WriteConfig, WriteFrom, WriteSource,
};
use retbench_model::{Model, ModelConfig};

fn written(from: WriteFrom) -> (Vec<f32>, Vec<f32>) {
    let mut r = RetentionConfig::new(16);
    r.layers = Layers::List(vec![1]);
    r.write = WriteConfig {
        from,
        ..WriteConfig::append(Evict::Fifo, WriteSource::Token {})
    };
    let map = SeededVarMap::new(VarMap::new(), "from", 0);
    let cfg = ModelConfig::new(16, 2, 2, 10, 8);
    let model = Model::new(&cfg, Some(&r), map.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let dev = Device::Cpu;
    let a = Tensor::from_vec((0..8u32).collect::<Vec<_>>(), (1, 8), &dev).unwrap();
    let b = Tensor::from_vec((0..8u32).map(|t| 9 - t).collect::<Vec<_>>(), (1, 8), &dev).unwrap();
    let mut mem = model.new_memories(1, 0, DType::F32, &dev).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let empty = model.forward(&b, &mut mem).unwrap();
    let first = model.forward(&a, &mut mem).unwrap();
    model.write(&first, &mut mem, None).unwrap();
    let full = model.forward(&b, &mut mem).unwrap();
    (flat(&empty.hidden[0]), flat(&full.hidden[0]))
}

#[test]
fn an_input_write_ignores_the_read_and_an_output_write_carries_it() {
    let (empty, full) = written(WriteFrom::Input);
    assert_eq!(empty, full);
    let (empty, full) = written(WriteFrom::Output);
    assert_ne!(empty, full);
}
