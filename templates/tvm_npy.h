// tvm_npy.h - what the edgebuild TVM runners share: .npy files <-> TVM tensors, and loading a
// Relax VM from a model library. Header-only; included by tvm_runner.cc and whisper_runner.cc.
#pragma once

#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>


namespace ffi = tvm::ffi;

namespace {


// Relax VM constants (tvm/runtime/memory/memory_manager.h): allocator kinds for vm_initialization.
constexpr int kPooledAllocator = 2;

// Host memory for input tensors: ffi::Tensor::FromNDAlloc calls AllocData/FreeData.
struct CPUAlloc {
  void AllocData(DLTensor* tensor) {
    size_t bytes = ffi::GetDataSize(*tensor);
    // 64-byte alignment is what TVM kernels assume for vector loads.
    tensor->data = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
    if (tensor->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct NpyArray {
  DLDataType dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

// Maps a NumPy dtype descr ("<f4", "|b1", ...) to DLPack.
DLDataType ParseDescr(const std::string& descr) {
  if (descr.size() < 3 || descr[0] == '>') throw std::runtime_error("unsupported .npy dtype " + descr);
  int bits = std::stoi(descr.substr(2)) * 8;
  switch (descr[1]) {
    case 'f': return DLDataType{kDLFloat, static_cast<uint8_t>(bits), 1};
    case 'i': return DLDataType{kDLInt, static_cast<uint8_t>(bits), 1};
    case 'u': return DLDataType{kDLUInt, static_cast<uint8_t>(bits), 1};
    case 'b': return DLDataType{kDLBool, 8, 1};
    default: throw std::runtime_error("unsupported .npy dtype " + descr);
  }
}

std::string FormatDescr(DLDataType dtype) {
  char kind;
  switch (dtype.code) {
    case kDLFloat: kind = 'f'; break;
    case kDLInt: kind = 'i'; break;
    case kDLUInt: kind = 'u'; break;
    case kDLBool: kind = 'b'; break;
    default: throw std::runtime_error("output dtype code " + std::to_string(dtype.code) + " has no .npy form");
  }
  if (dtype.lanes != 1) throw std::runtime_error("vector dtypes have no .npy form");
  return std::string(dtype.bits == 8 ? "|" : "<") + kind + std::to_string(dtype.bits / 8);
}

// The value of `key` in the .npy header dict, e.g. "'<f4'" or "(1, 3)".
std::string HeaderField(const std::string& header, const std::string& key) {
  size_t pos = header.find("'" + key + "'");
  if (pos == std::string::npos) throw std::runtime_error(".npy header lacks " + key);
  pos = header.find(':', pos) + 1;
  while (header[pos] == ' ') ++pos;
  size_t end = header[pos] == '(' ? header.find(')', pos) + 1 : header.find_first_of(",}", pos);
  return header.substr(pos, end - pos);
}

NpyArray ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char len[2];
    in.read(reinterpret_cast<char*>(len), 2);
    header_len = len[0] | (len[1] << 8);
  } else {  // versions 2 and 3 only widen the header length to 4 bytes
    unsigned char len[4];
    in.read(reinterpret_cast<char*>(len), 4);
    header_len = len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<uint32_t>(len[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(&header[0], header_len);

  NpyArray array;
  std::string descr = HeaderField(header, "descr");
  array.dtype = ParseDescr(descr.substr(1, descr.size() - 2));
  if (HeaderField(header, "fortran_order") != "False") throw std::runtime_error(path + " is in Fortran order");
  std::string shape = HeaderField(header, "shape");
  std::stringstream dims(shape.substr(1, shape.size() - 2));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(' ') != std::string::npos) array.shape.push_back(std::stoll(dim));
  }
  size_t numel = 1;
  for (int64_t d : array.shape) numel *= static_cast<size_t>(d);
  array.bytes.resize(ffi::GetDataSize(numel, array.dtype));
  in.read(array.bytes.data(), static_cast<std::streamsize>(array.bytes.size()));
  if (!in) throw std::runtime_error(path + " is truncated");
  return array;
}

void WriteNpy(const std::string& path, DLDataType dtype, const std::vector<int64_t>& shape, const void* data) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(2, 3)" but "(2,)" for one dimension
  std::string header = "{'descr': '" + FormatDescr(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64 bytes.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xff));
  out.put(static_cast<char>(len >> 8));
  out << header;
  size_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<size_t>(d);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(ffi::GetDataSize(numel, dtype)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

ffi::Tensor ToTensor(const NpyArray& array) {
  DLDevice cpu{kDLCPU, 0};
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(array.shape.data(), array.shape.size()),
                                                array.dtype, cpu);
  std::memcpy(tensor.data_ptr(), array.bytes.data(), array.bytes.size());
  return tensor;
}

// The library's Relax VM executable, then a VM bound to CPU 0 with the pooled allocator.
ffi::Module LoadVm(const std::string& model_path) {
  ffi::Module library = ffi::Module::LoadFromFile(model_path);
  ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  return vm;
}

}  // namespace
