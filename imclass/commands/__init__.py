"""The commands: each a readable sequence of stage calls (train, evaluate, predict, tune,
compare, lr-find). The CLI and `imclass.api` sit above them; the stages below."""
