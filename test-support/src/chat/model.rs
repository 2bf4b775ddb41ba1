//! SmolLM2-135M-Instruct from its GGUF file, run on the CPU by candle's quantized llama.

use std::path::Path;

use anyhow::{Context as _, bail};
use candle_core::quantized::tokenizer::TokenizerFromGguf as _;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use tokenizers::Tokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// The file `scripts/models.sh install` puts in the model's directory.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// One message of a conversation, as the chat template renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A loaded model: weights (shared by every generation) and tokenizer.
#[derive(Clone)]
pub struct ChatModel {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    end_of_turn: u32,
    end_of_text: u32,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel").finish_non_exhaustive()
    }
}

/// What one generation produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Tokens of the rendered prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Whether generation stopped at the end of the turn (`stop`) rather than at the limit.
    pub finished: bool,
}

impl ChatModel {
    /// Loads the model from `dir` (holding [`MODEL_FILE`]) or from a GGUF file.
    ///
    /// # Errors
    ///
    /// When the file is missing or not a llama GGUF with a GPT-2 style vocabulary.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file_path = if path.is_dir() { path.join(MODEL_FILE) } else { path.to_owned() };
        let mut file = std::fs::File::open(&file_path)
            .with_context(|| format!("cannot open the chat model {}", file_path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{} is not a GGUF file", file_path.display()))?;
        let mut tokenizer = Tokenizer::from_gguf(&content)
            .with_context(|| format!("{}: no usable vocabulary", file_path.display()))?;
        // The GGUF names SmolLM's pre-tokenizer, which candle maps to GPT-2's with a prefix
        // space; the model was trained with digits split and no prefix space.
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        let token = |name: &str| {
            tokenizer.token_to_id(name).with_context(|| format!("the vocabulary has no {name}"))
        };
        let end_of_turn = token("<|im_end|>")?;
        let end_of_text = token("<|endoftext|>")?;
        let weights = unpacked_weights(content, &mut file)
            .with_context(|| format!("cannot load the weights of {}", file_path.display()))?;
        Ok(Self { weights, tokenizer, end_of_turn, end_of_text })
    }

    /// The conversation rendered with the model's chat template (ChatML), ready for the
    /// assistant's turn.
    pub fn render(turns: &[Turn]) -> String {
        let mut prompt = String::new();
        for turn in turns {
            prompt.push_str("<|im_start|>");
            prompt.push_str(&turn.role);
            prompt.push('\n');
            prompt.push_str(&turn.content);
            prompt.push_str("<|im_end|>\n");
        }
        prompt.push_str("<|im_start|>assistant\n");
        prompt
    }

    /// Token ids of `text`.
    ///
    /// # Errors
    ///
    /// When the tokenizer fails.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(anyhow::Error::msg)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokens of `turns` as rendered.
    ///
    /// # Errors
    ///
    /// When the tokenizer fails.
    pub fn prompt_tokens(&self, turns: &[Turn]) -> anyhow::Result<usize> {
        Ok(self.encode(&Self::render(turns))?.len())
    }

    /// Generates the assistant's answer to `turns`, greedily (the same prompt always gives the
    /// same answer), at most `max_tokens` tokens, handing each piece of text to `emit` as it is
    /// decoded; `emit` returning `false` stops generation (the client went away).
    ///
    /// # Errors
    ///
    /// When the prompt and the answer would not fit the model's context, or candle fails.
    pub fn generate(
        &self,
        turns: &[Turn],
        max_tokens: usize,
        mut emit: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<Generated> {
        let prompt = self.encode(&Self::render(turns))?;
        if prompt.len() + max_tokens > MAX_SEQ_LEN {
            bail!(
                "the prompt has {} tokens and max_tokens is {max_tokens}: together over the \
                 model's context of {MAX_SEQ_LEN} tokens",
                prompt.len()
            );
        }
        // Each generation has its own key-value cache; the weights are shared.
        let mut weights = self.weights.clone();
        let mut sampler = LogitsProcessor::from_sampling(0, Sampling::ArgMax);
        let mut generated: Vec<u32> = Vec::new();
        let mut shown = 0;
        let mut next = {
            let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let logits = weights.forward(&input, 0)?.squeeze(0)?;
            sampler.sample(&logits)?
        };
        let mut finished = false;
        while generated.len() < max_tokens {
            if next == self.end_of_turn || next == self.end_of_text {
                finished = true;
                break;
            }
            generated.push(next);
            let text = self.tokenizer.decode(&generated, true).map_err(anyhow::Error::msg)?;
            // A character split over tokens waits for its last byte.
            if !text.ends_with('\u{FFFD}') && text.len() > shown && text.is_char_boundary(shown) {
                if !emit(&text[shown..]) {
                    break;
                }
                shown = text.len();
            }
            let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
            let logits = weights.forward(&input, prompt.len() + generated.len() - 1)?.squeeze(0)?;
            next = sampler.sample(&logits)?;
        }
        Ok(Generated { prompt_tokens: prompt.len(), completion_tokens: generated.len(), finished })
    }
}

/// The weights with every tensor unpacked to f32. candle multiplies Q4_1 blocks without SIMD,
/// which makes reading a long prompt take tens of seconds; as f32 the same weights (540 MB for
/// 135M parameters) go through its vectorised matrix products.
fn unpacked_weights(
    content: gguf_file::Content,
    file: &mut std::fs::File,
) -> anyhow::Result<ModelWeights> {
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let packed = content.tensor(file, name, &Device::Cpu)?;
        let unpacked = QTensor::quantize(&packed.dequantize(&Device::Cpu)?, GgmlDType::F32)?;
        tensors.push((name.clone(), unpacked));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> =
        content.metadata.iter().map(|(name, value)| (name.as_str(), value)).collect();
    let named: Vec<(&str, &QTensor)> =
        tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)).collect();
    let mut buffer = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &named)?;
    drop(tensors);
    buffer.set_position(0);
    let unpacked = gguf_file::Content::read(&mut buffer)?;
    Ok(ModelWeights::from_gguf(unpacked, &mut buffer, &Device::Cpu)?)
}
