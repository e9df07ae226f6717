// The switched conv's training op, conv2d(x * m, W) with m = latent > threshold, as one C++ autograd function.
// Same maths as bap/layers/switched.py's _SwitchedConv (the fallback when this cannot be built); in C++ the
// per-call cost of a Python autograd function goes away, and on CPU the backward's two passes over the
// activations (switch gradient sum(grad_in * x) and masking grad_in) become one pass without a temporary.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// sum(g[i] * x[i]) over one plane; omp simd lets the compiler vectorise the float sum.
float dot(const float* g, const float* x, int64_t size) {
  float total = 0.f;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < size; ++i) total += g[i] * x[i];
  return total;
}

// Returns sum(grad_in[:, c] * x[:, c]) per channel c and zeroes grad_in[:, c] where mask[c] is off, in one pass.
// grad_in and x: contiguous float32 NCHW on CPU.
at::Tensor switch_grad_and_mask_cpu(at::Tensor& grad_in, const at::Tensor& x, const at::Tensor& mask) {
  const int64_t batch = x.size(0), channels = x.size(1);
  const int64_t plane = channels == 0 || batch == 0 ? 0 : x.numel() / (batch * channels);
  auto grad_latent = at::empty({channels}, x.options());
  float* g = grad_in.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  const bool* on = mask.data_ptr<bool>();
  float* out = grad_latent.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(batch * plane, 1));
  at::parallel_for(0, channels, grain, [&](int64_t begin, int64_t end) {
    // Sample by sample, this thread's channels are one contiguous block: memory is read as a stream.
    std::vector<double> totals(end - begin, 0.0);
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = begin; c < end; ++c) {
        float* plane_g = g + (n * channels + c) * plane;
        totals[c - begin] += dot(plane_g, xs + (n * channels + c) * plane, plane);
        if (!on[c]) std::fill(plane_g, plane_g + plane, 0.f);
      }
    }
    for (int64_t c = begin; c < end; ++c) out[c] = static_cast<float>(totals[c - begin]);
  });
  return grad_latent;
}

struct SwitchedConv : public torch::autograd::Function<SwitchedConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& latent,
                            const at::Tensor& weight, double threshold, int64_t stride, int64_t padding) {
    auto mask = latent.gt(threshold);
    ctx->save_for_backward({x, mask, weight});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    // conv(x * m, W) == conv(x, W * m): the mask goes on whichever is smaller, usually the weight; deep layers
    // of small inputs have fewer input values per channel (batch x positions) than weights per input channel.
    const auto mask_shape = mask.view({1, -1, 1, 1});
    if (x.size(0) * x.size(2) * x.size(3) < weight.size(0) * weight.size(2) * weight.size(3))
      return at::conv2d(x.mul(mask_shape), weight.to(x.scalar_type()), {}, stride, padding);
    return at::conv2d(x, weight.mul(mask_shape).to(x.scalar_type()), {}, stride, padding);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& mask = saved[1];
    const at::Tensor& weight = saved[2];
    const at::Tensor& grad_out = grads[0];
    const int64_t stride = ctx->saved_data["stride"].toInt(), padding = ctx->saved_data["padding"].toInt();
    // Under autocast the output gradient may be half precision while x is float: the input gradient needs
    // only x's shape then.
    const at::Tensor shape_of_x =
        x.scalar_type() == grad_out.scalar_type() ? x : at::empty({1}, grad_out.options()).expand(x.sizes());
    at::Tensor grad_in = std::get<0>(at::convolution_backward(
        grad_out, shape_of_x, weight.to(grad_out.scalar_type()), c10::nullopt, {stride, stride}, {padding, padding},
        {1, 1}, false, {0, 0}, 1, {true, false, false}));
    at::Tensor grad_latent;
    const bool fused = ctx->needs_input_grad(1) && grad_in.device().is_cpu() &&
                       grad_in.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat &&
                       grad_in.is_contiguous() && x.is_contiguous();
    if (fused) {
      grad_latent = switch_grad_and_mask_cpu(grad_in, x, mask);
    } else {
      if (ctx->needs_input_grad(1))
        grad_latent = grad_in.to(at::kFloat).mul(x.to(at::kFloat)).sum({0, 2, 3});
      grad_in.mul_(mask.view({1, -1, 1, 1}));
    }
    at::Tensor grad_x = ctx->needs_input_grad(0) ? grad_in.to(x.scalar_type()) : at::Tensor();
    return {grad_x, grad_latent, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor switched_conv(const at::Tensor& x, const at::Tensor& latent, const at::Tensor& weight, double threshold,
                         int64_t stride, int64_t padding) {
  return SwitchedConv::apply(x, latent, weight, threshold, stride, padding);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("switched_conv", &switched_conv, "conv2d(x * (latent > threshold), weight) with straight-through switch gradients");
}
