// SPDX-License-Identifier: Apache-2.0
// How a converted linear layer is stored in a safetensors file: INT8 values with their
// alphas, and block-CSR structures, so a quantized or sparsified model is saved as it runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/nn/any_linear.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Tensors of a linear layer named `<L>` (e.g. "layers.0.ffn.up"), by its format:
///
/// | format        | tensors                                                                |
/// |---------------|------------------------------------------------------------------------|
/// | `dense_f32`   | `<L>.weight` F32/F16/BF16 `[out, in]` (PyTorch's name)                 |
/// | `dense_i8`    | `<L>.qweight` I8 `[out, in]`, `<L>.weight_alpha` F32 `[out]`          |
/// | `gsparse_f32` | `<L>.block_shape` I32 `[2]` (R, C), `<L>.block_row_ptr` I32            |
/// |               | `[ceil(out / R) + 1]`, `<L>.block_col_idx` I32 `[blocks]`,             |
/// |               | `<L>.block_values` F32 `[blocks, R * C]` (each block `[C][R]`)         |
/// | `gsparse_i8`  | the same with `<L>.block_values` I8 (each block `[R][C]`) and          |
/// |               | `<L>.weight_alpha` F32 `[out]`                                         |
///
/// and `<L>.bias` `[out]` when the layer has one. INT8 values are symmetric (-127..127) and
/// mean `q * alpha / 127` with the alpha of their output channel; block-CSR is
/// sparse::BlockCsr. A calibrated activation alpha travels separately as
/// `<L>.input_alpha` `[1]`.

/// Whether `file` holds layer `name` as converted parts (`.qweight` or `.block_col_idx`)
/// rather than a float `.weight`.
inline bool has_stored_parts(const io::SafetensorsFile& file, const std::string& name) {
  return file.contains(name + ".qweight") || file.contains(name + ".block_col_idx");
}

namespace detail {

inline std::string dims_of(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Checks dtype and shape of one part and records it as used; the error names file and tensor.
inline const io::TensorInfo& stored_part(const io::SafetensorsFile& file, const std::string& tensor,
                                         std::initializer_list<DType> dtypes, const std::vector<std::size_t>& shape,
                                         std::set<std::string>& used) {
  const std::string where = file.name() + ": " + tensor;
  if (!file.contains(tensor)) fail<FormatError>("model", "missing tensor", tensor, "nothing", where);
  const io::TensorInfo& info = file.info(tensor);
  bool dtype_ok = false;
  std::string names;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || info.dtype == d;
    names += (names.empty() ? "" : "|") + std::string(dtype_name(d));
  }
  if (!dtype_ok) fail<FormatError>("model", "tensor dtype", names, dtype_name(info.dtype), where);
  if (info.shape != shape) fail<ShapeError>("model", "tensor shape", dims_of(shape), dims_of(info.shape), where);
  used.insert(tensor);
  return info;
}

// A 1-d I32 part as unsigned indices; negative entries are a FormatError.
inline std::vector<std::uint32_t> index_part(const io::SafetensorsFile& file, const std::string& tensor,
                                             std::size_t n, std::set<std::string>& used) {
  stored_part(file, tensor, {DType::I32}, {n}, used);
  std::vector<std::uint32_t> out(n);
  if (n == 0) return out;
  const auto t = file.load<std::int32_t>(tensor);
  for (std::size_t i = 0; i < n; ++i) {
    if (t.data()[i] < 0) {
      fail<FormatError>("model", "negative index", ">= 0", t.data()[i],
                        file.name() + ": " + tensor + " element " + std::to_string(i));
    }
    out[i] = static_cast<std::uint32_t>(t.data()[i]);
  }
  return out;
}

// Per-channel weight alphas: F32 [n], each finite and >= 0.
inline std::vector<float> alpha_part(const io::SafetensorsFile& file, const std::string& tensor, std::size_t n,
                                     std::set<std::string>& used) {
  stored_part(file, tensor, {DType::F32}, {n}, used);
  std::vector<float> out(n);
  if (n == 0) return out;
  const auto t = file.load<float>(tensor);
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = t.data()[i];
    if (!(out[i] >= 0.0f) || !std::isfinite(out[i])) {
      fail<FormatError>("model", "alpha must be finite and >= 0", ">= 0", out[i],
                        file.name() + ": " + tensor + " element " + std::to_string(i));
    }
  }
  return out;
}

template <class T>
void check_symmetric(const T* v, std::size_t n, const std::string& where) {
  if constexpr (std::is_same_v<T, std::int8_t>) {
    for (std::size_t i = 0; i < n; ++i) {
      if (v[i] == -128) fail<FormatError>("model", "int8 weight outside the symmetric range", "-127..127", -128, where);
    }
  }
}

}  // namespace detail

/// Reads layer `name` of shape `[out, in]` from its stored parts (see the table above),
/// in the format they hold. Every part is checked before use — dtype, shape, index range,
/// block-CSR structure, alphas finite and >= 0, int8 values in -127..127 — and recorded in
/// `used`. @throws FormatError (missing part, wrong dtype, corrupt structure, bad value) or
/// ShapeError (wrong shape), naming the file and tensor; UnsupportedError for a block shape
/// the format's kernel does not have.
inline nn::AnyLinear read_stored_linear(const io::SafetensorsFile& file, const std::string& name, std::size_t out,
                                        std::size_t in, std::set<std::string>& used) {
  using detail::stored_part;
  std::vector<float> bias;
  if (file.contains(name + ".bias")) {
    const auto& info = file.info(name + ".bias");
    if (info.shape.size() != 1 || info.shape[0] != out) {
      ::dynasparse::detail::fail<ShapeError>("model", "tensor shape", "[" + std::to_string(out) + "]",
                                             detail::dims_of(info.shape), file.name() + ": " + name + ".bias");
    }
    used.insert(name + ".bias");
    const auto b = file.load<float>(name + ".bias");
    bias.assign(b.data(), b.data() + out);
  }
  if (file.contains(name + ".qweight")) {
    stored_part(file, name + ".qweight", {DType::I8}, {out, in}, used);
    quant::QuantizedMatrix q;
    q.params.granularity = quant::Granularity::PerChannel;
    q.params.rows = out;
    q.params.cols = in;
    q.params.alpha = detail::alpha_part(file, name + ".weight_alpha", out, used);
    const auto v = file.load<std::int8_t>(name + ".qweight");
    detail::check_symmetric(v.data(), v.size(), file.name() + ": " + name + ".qweight");
    q.values.resize_discard(out * in);
    std::copy(v.data(), v.data() + v.size(), q.values.data());
    return nn::Linear<quant::DenseI8>(quant::DenseI8(q, std::move(bias), name));
  }
  const auto shape = detail::index_part(file, name + ".block_shape", 2, used);
  // Bounded before anything is sized from them; the kernels' block heights are at most 64.
  if (shape[0] == 0 || shape[1] == 0 || shape[0] > 1024 || shape[1] > 1024) {
    ::dynasparse::detail::fail<FormatError>("model", "block shape", "1..1024 x 1..1024",
                                            std::to_string(shape[0]) + "x" + std::to_string(shape[1]),
                                            file.name() + ": " + name + ".block_shape");
  }
  const std::size_t r = shape[0], c = shape[1];
  const std::size_t block_rows = (out + r - 1) / r;
  const std::string values_name = name + ".block_values";
  if (!file.contains(values_name)) {
    ::dynasparse::detail::fail<FormatError>("model", "missing tensor", values_name, "nothing", file.name() + ": " + values_name);
  }
  const io::TensorInfo& vinfo = file.info(values_name);
  const std::size_t blocks = vinfo.shape.size() == 2 ? vinfo.shape[0] : 0;
  // Structure first (its checks do not depend on the values' dtype), then the values.
  auto fill = [&](auto& csr) {
    csr.out = out;
    csr.in = in;
    csr.shape = sparse::BlockShape{r, c};
    csr.row_ptr = detail::index_part(file, name + ".block_row_ptr", block_rows + 1, used);
    csr.col_idx = detail::index_part(file, name + ".block_col_idx", blocks, used);
  };
  if (vinfo.dtype == DType::I8) {
    sparse::BlockCsr<std::int8_t> csr;
    fill(csr);
    stored_part(file, values_name, {DType::I8}, {blocks, r * c}, used);
    csr.values.resize_discard(blocks * r * c);
    if (blocks != 0) {
      const auto v = file.load<std::int8_t>(values_name);
      detail::check_symmetric(v.data(), v.size(), file.name() + ": " + values_name);
      std::copy(v.data(), v.data() + v.size(), csr.values.data());
    }
    std::vector<float> alpha = detail::alpha_part(file, name + ".weight_alpha", out, used);
    csr.validate(file.name() + ": " + name);
    return nn::Linear<sparse::GroupSparseI8>(sparse::GroupSparseI8(std::move(csr), std::move(alpha), std::move(bias), name));
  }
  sparse::BlockCsr<float> csr;
  fill(csr);
  stored_part(file, values_name, {DType::F32}, {blocks, r * c}, used);
  csr.values.resize_discard(blocks * r * c);
  if (blocks != 0) {
    const auto v = file.load<float>(values_name);
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v.data()[i])) {
        ::dynasparse::detail::fail<FormatError>("model", "non-finite weight", "finite values", v.data()[i],
                                                file.name() + ": " + values_name + " element " + std::to_string(i));
      }
    }
    std::copy(v.data(), v.data() + v.size(), csr.values.data());
  }
  csr.validate(file.name() + ": " + name);
  return nn::Linear<sparse::GroupSparseF32>(sparse::GroupSparseF32(std::move(csr), std::move(bias), name));
}

/// Adds layer `layer` to `w` under its name() in its own format (the table above), plus its
/// static activation alpha as `<L>.input_alpha` when it has one. The tensors are copied.
inline void write_linear(io::SafetensorsWriter& w, const nn::AnyLinear& layer) {
  const std::string& name = layer.name();
  const std::size_t out = layer.out_features(), in = layer.in_features();
  auto add_csr = [&](const auto& csr) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(csr.values.data())>>;
    const std::int32_t shape[2] = {static_cast<std::int32_t>(csr.shape.rows), static_cast<std::int32_t>(csr.shape.cols)};
    w.add<std::int32_t>(name + ".block_shape", {2}, shape);
    std::vector<std::int32_t> idx(csr.row_ptr.begin(), csr.row_ptr.end());
    w.add<std::int32_t>(name + ".block_row_ptr", {idx.size()}, idx.data());
    idx.assign(csr.col_idx.begin(), csr.col_idx.end());
    w.add<std::int32_t>(name + ".block_col_idx", {idx.size()}, idx.data());
    w.add<T>(name + ".block_values", {csr.stored_blocks(), csr.shape.rows * csr.shape.cols}, csr.values.data());
  };
  const auto& v = layer.variant();
  if (const auto* d = std::get_if<nn::Linear<nn::DenseF32>>(&v)) {
    const std::vector<float> weight = d->format().unpack();
    w.add<float>(name + ".weight", {out, in}, weight.data());
  } else if (const auto* q = std::get_if<nn::Linear<quant::DenseI8>>(&v)) {
    const quant::QuantizedMatrix m = q->format().unpack();
    w.add<std::int8_t>(name + ".qweight", {out, in}, m.values.data());
    w.add<float>(name + ".weight_alpha", {out}, q->format().alphas().data());
  } else if (const auto* f = std::get_if<nn::Linear<sparse::GroupSparseF32>>(&v)) {
    add_csr(f->format().csr());
  } else {
    const auto& s = std::get<nn::Linear<sparse::GroupSparseI8>>(v).format();
    add_csr(s.csr());
    w.add<float>(name + ".weight_alpha", {out}, s.alphas().data());
  }
  if (!layer.bias().empty()) w.add<float>(name + ".bias", {out}, layer.bias().data());
  const float alpha = layer.activation_alpha();
  if (alpha > 0.0f) w.add<float>(name + ".input_alpha", {1}, &alpha);
}

DYNASPARSE_NAMESPACE_END
