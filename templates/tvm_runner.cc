// tvm_runner.cc - load a TVM Relax model library (model.so) and run its `main` on .npy inputs.
//
// This is the device-side loader that edgebuild ships in TVM bundles, and also what the build uses
// to check an ARM64 artifact on an x86 host under qemu-aarch64-static.
//
// Build on the device (libtvm_runtime.so, libtvm_ffi.so and include/ come with the bundle; they are
// the files of the apache-tvm and apache-tvm-ffi wheels for the device's architecture):
//
//   g++ -std=c++17 -O2 tvm_runner.cc -I include -L . -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi \
//       -Wl,-rpath,'$ORIGIN' -o tvm_runner
//
// Run:
//
//   ./tvm_runner model.so IN_DIR OUT_DIR
//
// IN_DIR holds the inputs of `main` as 0.npy, 1.npy, ... in the order of main's parameters
// (NumPy .npy format version 1.0, little-endian, C order). Every output is written to OUT_DIR as
// 0.npy, 1.npy, ...: a tuple result is flattened depth-first, a shape becomes an int64 tensor and a
// scalar a 0-d tensor. Exit status 0 on success; on failure one line on stderr says why.

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

// Writes one result value, recursing into tuples; returns the next output index.
int WriteOutputs(const ffi::Any& value, const std::string& out_dir, int index) {
  if (auto tensor = value.as<ffi::Tensor>()) {
    const DLTensor* dl = tensor->GetDLTensorPtr();
    if (dl->device.device_type != kDLCPU) throw std::runtime_error("output is not on the CPU");
    if (!tensor->IsContiguous()) throw std::runtime_error("output tensor is not contiguous");
    std::vector<int64_t> shape(dl->shape, dl->shape + dl->ndim);
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", dl->dtype, shape,
             static_cast<const char*>(dl->data) + dl->byte_offset);
    return index + 1;
  }
  if (auto tuple = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *tuple) index = WriteOutputs(item, out_dir, index);
    return index;
  }
  if (auto shape = value.as<ffi::Shape>()) {
    std::vector<int64_t> dims(shape->begin(), shape->end());
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLInt, 64, 1},
             {static_cast<int64_t>(dims.size())}, dims.data());
    return index + 1;
  }
  if (auto number = value.try_cast<double>(); number && value.type_index() == ffi::TypeIndex::kTVMFFIFloat) {
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLFloat, 64, 1}, {}, &*number);
    return index + 1;
  }
  if (auto integer = value.try_cast<int64_t>()) {
    WriteNpy(out_dir + "/" + std::to_string(index) + ".npy", DLDataType{kDLInt, 64, 1}, {}, &*integer);
    return index + 1;
  }
  throw std::runtime_error("output of type " + value.GetTypeKey() + " cannot be written");
}

int RunOne(ffi::Module vm, const std::string& in_dir, const std::string& out_dir) {
  ffi::Function main_fn = vm->GetFunction("main").value();
  int64_t arity = vm->GetFunction("get_function_arity").value()("main").cast<int64_t>();

  std::vector<ffi::Tensor> inputs;
  for (int64_t i = 0; i < arity; ++i) {
    std::string path = in_dir + "/" + std::to_string(i) + ".npy";
    if (!std::ifstream(path)) {
      throw std::runtime_error("main takes " + std::to_string(arity) + " inputs but " + std::to_string(i) +
                               " were given");
    }
    inputs.push_back(ToTensor(ReadNpy(path)));
  }
  if (std::ifstream(in_dir + "/" + std::to_string(arity) + ".npy")) {
    throw std::runtime_error("main takes " + std::to_string(arity) + " inputs but more were given");
  }
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  return WriteOutputs(result, out_dir, 0);
}

// IN_DIR holds 0.npy, 1.npy, ... (one call), or subdirectories 0/, 1/, ... each holding one call's
// inputs (many calls on one loaded model: outputs go to OUT_DIR/0/, OUT_DIR/1/, ...).
int Run(const std::string& model_path, const std::string& in_dir, const std::string& out_dir) {
  // The library's Relax VM executable, then a VM bound to CPU 0 with the pooled allocator.
  ffi::Module library = ffi::Module::LoadFromFile(model_path);
  ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  if (!std::filesystem::is_directory(in_dir + "/0")) return RunOne(vm, in_dir, out_dir);
  int total = 0;
  for (int call = 0; std::filesystem::is_directory(in_dir + "/" + std::to_string(call)); ++call) {
    std::string out = out_dir + "/" + std::to_string(call);
    std::filesystem::create_directories(out);
    total += RunOne(vm, in_dir + "/" + std::to_string(call), out);
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " model.so IN_DIR OUT_DIR" << std::endl;
    return 2;
  }
  try {
    int count = Run(argv[1], argv[2], argv[3]);
    std::cout << "wrote " << count << " output(s)" << std::endl;
    return 0;
  } catch (const ffi::Error& error) {
    std::cerr << "tvm_runner: " << error.kind() << ": " << error.message() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "tvm_runner: " << error.what() << std::endl;
  }
  return 1;
}
