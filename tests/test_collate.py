import torch

from encoder.core.collate import Collator
from encoder.training.data.sampler import LengthGroupedSampler


def test_collator_pads_to_multiple_of_8_with_bool_mask_true_at_padding():
    batch = Collator(pad_token_id=0)([{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2] + [9] * 9 + [3],
                                                                               "labels": 0}])
    assert batch["input_ids"].shape == (2, 16) and batch["padding_mask"].shape == (2, 16)
    assert batch["padding_mask"].dtype == torch.bool
    assert batch["padding_mask"][0].tolist() == [False] * 3 + [True] * 13
    assert batch["padding_mask"][1].tolist() == [False] * 11 + [True] * 5
    assert (batch["input_ids"][batch["padding_mask"]] == 0).all()
    assert batch["labels"].tolist() == [1, 0]
    # no fully masked row: every row keeps its first ([CLS]) token
    assert not batch["padding_mask"].all(dim=1).any()
    assert not batch["padding_mask"][:, 0].any()


def test_collator_exact_multiple_adds_no_padding():
    batch = Collator()([{"input_ids": list(range(8))}, {"input_ids": list(range(8))}])
    assert batch["input_ids"].shape == (2, 8) and not batch["padding_mask"].any()
    assert "labels" not in batch


def test_length_grouped_sampler_is_a_seeded_permutation_of_homogeneous_batches():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 120, (1000,), generator=g).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=16, mega=10, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(1000))
    assert list(sampler) == first  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new epoch reshuffles
    # padding with grouping vs a plain random order, batched the same way
    def padded(order):
        return sum(16 * max(lengths[i] for i in order[s:s + 16]) for s in range(0, len(order), 16))
    random_order = torch.randperm(1000, generator=g).tolist()
    assert padded(first) < 0.75 * padded(random_order)
    # only the final batch may be short: the batch boundaries of a DataLoader line up with groups
    batches = [first[s:s + 16] for s in range(0, 1000, 16)]
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 1000 % 16


def mlm_collator(**kw):
    # ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK], as in our tokenizers
    return Collator(pad_token_id=0, mlm_probability=0.15, mask_token_id=4, special_token_ids=[0, 2, 3, 4],
                    vocab_size=1000, **kw)


def test_mlm_masking_follows_bert_and_never_touches_special_or_padding_tokens():
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": [2, *torch.randint(5, 1000, (int(n),), generator=g).tolist(), 3]}
                for n in torch.randint(5, 120, (400,), generator=g)]
    batch = mlm_collator(seed=1)(examples)
    original = Collator(pad_token_id=0)(examples)["input_ids"]
    labels, ids = batch["labels"], batch["input_ids"]
    selected = labels != -100
    maskable = ~batch["padding_mask"] & (original > 4)
    assert not (selected & ~maskable).any()  # never [CLS], [SEP] or padding
    assert (labels[selected] == original[selected]).all()  # labels hold the original tokens
    assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01
    n = selected.sum()
    as_mask = (ids[selected] == 4).sum() / n
    kept = (ids[selected] == original[selected]).sum() / n
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1 - 0.001) < 0.02  # random may hit the original (1/1000)
    assert (ids[~selected] == original[~selected]).all()  # unselected tokens are untouched
    # seeded by the seed and the batch itself: the same batch is masked the same way, in any process
    again = mlm_collator(seed=1)(examples)
    assert torch.equal(again["input_ids"], ids) and torch.equal(again["labels"], labels)
    assert not torch.equal(mlm_collator(seed=2)(examples)["labels"], labels)
    regrouped = mlm_collator(seed=1)(examples[1:] + examples[:1])["labels"]  # another epoch's grouping
    assert not torch.equal(regrouped[:-1], labels[1:])


def test_mlm_masking_selects_at_least_one_token_in_a_tiny_batch():
    for seed in range(20):
        batch = mlm_collator(seed=seed)([{"input_ids": [2, 17, 3]}])
        assert (batch["labels"] != -100).sum() >= 1 and batch["labels"][0, 1] == 17


def test_the_sampler_takes_arrows_read_only_lengths_without_a_warning():
    """The loader hands it the length column as Arrow gives it: a read-only array, which torch warns about on every
    run unless it is copied (a fresh process: torch says it once per process)."""
    import subprocess
    import sys

    code = ("import numpy, warnings; warnings.simplefilter('error')\n"
            "from encoder.training.data.sampler import LengthGroupedSampler\n"
            "lengths = numpy.arange(10); lengths.flags.writeable = False\n"
            "print(sorted(LengthGroupedSampler(lengths, batch_size=4)) == list(range(10)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
