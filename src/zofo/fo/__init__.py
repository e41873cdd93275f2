"""First-order pieces the methods share: Adam with stochastic rounding (`sr_adam`) and an FO step replayed as a
CUDA graph (`graphed`)."""
