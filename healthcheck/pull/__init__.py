"""`trainguard pull`: results from the bucket to the laptop (source -> plan -> transfer -> render)."""
