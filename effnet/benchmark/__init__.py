"""Speed and memory benchmarks of effnet against its peers (timm, torchvision, ONNX Runtime)."""
