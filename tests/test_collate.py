import torch

from encoder.data.collate import Collator, LengthGroupedSampler


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
