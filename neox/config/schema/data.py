"""Data, tokenizer and post-training keys (upstream ``NeoXArgsTraining`` data part,
``NeoXArgsTokenizer`` and the DPO/KTO/RM keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neox.config.fields import key

SPLITS = ("train", "valid", "test")


@dataclass
class DataArgs:
    """Which .bin/.idx datasets are read, blended and packed."""

    data_path: str | None = key(None, "one dataset prefix, split into train/valid/test by 'split'")
    split: str = key("969, 30, 1", "train/valid/test document proportions for data_path")
    train_data_paths: list | None = key(None, "training dataset prefixes (give train, valid and test, or none)")
    valid_data_paths: list | None = key(None, "validation dataset prefixes")
    test_data_paths: list | None = key(None, "test dataset prefixes")
    train_data_weights: list | None = key(None, "blend weights of train_data_paths (default equal)")
    valid_data_weights: list | None = key(None, "blend weights of valid_data_paths (default equal)")
    test_data_weights: list | None = key(None, "blend weights of test_data_paths (default equal)")
    train_label_data_paths: list | None = key(None, "per-token label datasets for train_data_paths (SFT loss masks)")
    valid_label_data_paths: list | None = key(None, "per-token label datasets for valid_data_paths")
    test_label_data_paths: list | None = key(None, "per-token label datasets for test_data_paths")
    train_reward_data_paths: list | None = key(None, "per-sample reward datasets (KTO)")
    valid_reward_data_paths: list | None = key(None, "per-sample reward datasets (KTO)")
    test_reward_data_paths: list | None = key(None, "per-sample reward datasets (KTO)")
    pos_train_data_paths: list | None = key(None, "chosen responses of pairwise (DPO/RM) training data")
    neg_train_data_paths: list | None = key(None, "rejected responses of pairwise training data")
    pos_valid_data_paths: list | None = key(None, "chosen responses of pairwise validation data")
    neg_valid_data_paths: list | None = key(None, "rejected responses of pairwise validation data")
    pos_test_data_paths: list | None = key(None, "chosen responses of pairwise test data")
    neg_test_data_paths: list | None = key(None, "rejected responses of pairwise test data")
    pos_train_label_data_paths: list | None = key(None, "labels of pos_train_data_paths")
    neg_train_label_data_paths: list | None = key(None, "labels of neg_train_data_paths")
    pos_valid_label_data_paths: list | None = key(None, "labels of pos_valid_data_paths")
    neg_valid_label_data_paths: list | None = key(None, "labels of neg_valid_data_paths")
    pos_test_label_data_paths: list | None = key(None, "labels of pos_test_data_paths")
    neg_test_label_data_paths: list | None = key(None, "labels of neg_test_data_paths")
    weight_by_num_documents: bool = key(False, "blend weights from document counts (overrides the given weights)")
    weighted_sampler_alpha: float = key(1.0, "exponent for weight_by_num_documents")
    data_impl: Literal["infer", "mmap", "cached"] = key("infer", "indexed dataset format; infer sniffs the file magic")
    dataset_impl: Literal["gpt2", "pairwise", "online"] = key(
        "gpt2",
        "gpt2 (documents), pairwise (chosen/rejected) or online",
        unimplemented_values=("online",),
        hint="use gpt2 or pairwise datasets",
    )
    pack_impl: Literal["packed", "pack_until_overflow", "unpacked"] = key("packed", "how documents fill samples")
    allow_chopped: bool = key(True, "allow documents longer than seq_length to be cut (unpacked modes)")
    mmap_warmup: bool = key(False, "read the mmap files once at start")
    use_shared_fs: bool = key(True, "one rank builds the index caches on a shared filesystem; false: one per node")
    num_workers: int = key(2, "DataLoader worker processes")


@dataclass
class TokenizerArgs:
    """The tokenizer, and the padded vocabulary derived from it."""

    tokenizer_type: Literal[
        "GPT2BPETokenizer", "HFTokenizer", "HFGPT2Tokenizer", "SPMTokenizer", "CharLevelTokenizer", "TiktokenTokenizer"
    ] = key("GPT2BPETokenizer", "tokenizer implementation")
    vocab_file: str | None = key(None, "vocab.json (GPT2BPE), tokenizer.json (HFTokenizer) or the SPM model")
    merge_file: str | None = key(None, "merges.txt (GPT2BPETokenizer)")
    padded_vocab_size: int | None = key(
        None,
        "vocab rounded up to make_vocab_size_divisible_by x model_parallel_size (derived from the tokenizer; "
        "set it when the tokenizer file is not available here)",
    )


@dataclass
class PostTrainingArgs:
    """SFT, DPO, KTO and reward-model training."""

    train_impl: Literal["normal", "dpo", "rm", "kto", "reinforce"] = key(
        "normal",
        "loss: normal (LM/SFT), dpo, rm (reward model), kto or reinforce",
        unimplemented_values=("reinforce",),
        hint="use normal, dpo, rm or kto",
    )
    dpo_beta: float = key(0.1, "DPO beta")
    dpo_fp32: bool = key(True, "compute the DPO loss in fp32")
    dpo_reference_free: bool = key(False, "DPO without a reference model")
    kto_beta: float = key(0.1, "KTO beta")
    kto_fp32: bool = key(True, "compute the KTO loss in fp32")
    kto_desirable_weight: float = key(1.0, "KTO weight of desirable samples")
    kto_undesirable_weight: float = key(1.0, "KTO weight of undesirable samples")
    z_loss: float = key(0.0, "z-loss coefficient (reward models)")
    precompute_model_name: str | None = key(None, "suffix of precomputed reference log-prob datasets")
    kl_impl: Literal["abs", "mse", "kl", "full"] = key(
        "mse", "REINFORCE KL estimator", implemented=False, hint="REINFORCE"
    )
    kl_div_beta: float = key(0.1, "REINFORCE KL coefficient", implemented=False, hint="REINFORCE")
    fp32_reinforce: bool = key(True, "REINFORCE loss in fp32", implemented=False, hint="REINFORCE")
    reinforce_leave_one_out: bool = key(
        False, "REINFORCE leave-one-out baseline", implemented=False, hint="REINFORCE"
    )
