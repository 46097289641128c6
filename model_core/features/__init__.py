"""What an action and an item are to the model: the per-action encoder (paper §3.1, A.1), item
content vectors for logs without PinSage (`item_content`), and beyond the paper learned item ids
with their metadata tokens (`item_ids`) and co-engagement neighbours (`item_graph`)."""
