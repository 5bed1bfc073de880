// A Swift face on the C API: handles freed by deinit, errors thrown with their status and message.
// It adds no behaviour; everything is the C call of the same name (include/diffusion_rt.h).
import CDiffusionRT

/// A failed call: the C status and drt_last_error()'s message.
public struct DiffusionRTError: Error, CustomStringConvertible {
    public let status: drt_status
    public let message: String
    public var description: String { "\(String(cString: drt_status_string(status.rawValue))): \(message)" }
}

@inline(__always)
func check(_ status: drt_status) throws {
    if status != DRT_OK {
        throw DiffusionRTError(status: status, message: String(cString: drt_last_error()))
    }
}

/// A loaded model; immutable, shared by any number of sessions and threads.
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer

    /// `backend`: "tract", "ort" or nil (automatic); `executionProvider`: "coreml" or nil (CPU).
    public init(directory: String, backend: String? = nil, executionProvider: String? = nil, threads: UInt32 = 0) throws {
        var params = drt_model_params_default()
        params.threads = threads
        var model: OpaquePointer?
        let status = backend.withOptionalCString { b in
            executionProvider.withOptionalCString { ep in
                params.backend = b
                params.execution_provider = ep
                return drt_model_load(directory, &params, &model)
            }
        }
        try check(status)
        handle = model!
    }

    deinit { drt_model_free(handle) }

    public var sampleLength: Int { Int(drt_model_sample_len(handle)) }
}

/// One generation at a time over a model; cancel() may be called from any thread.
public final class Session: @unchecked Sendable {
    let handle: OpaquePointer
    let sampleLength: Int

    public init(model: Model) throws {
        var session: OpaquePointer?
        try check(drt_session_create(model.handle, nil, &session))
        handle = session!
        sampleLength = model.sampleLength
    }

    deinit { drt_session_free(handle) }

    /// `params` from drt_generate_params_default(): 0 steps, a negative guidance and a nil sampler
    /// are the model's own.
    public func generate(_ params: drt_generate_params) throws -> [Float] {
        var p = params
        var batch: UInt32 = 0
        try check(drt_generate_batch(handle, &p, &batch))
        var out = [Float](repeating: 0, count: Int(batch) * sampleLength)
        try out.withUnsafeMutableBufferPointer { buf in
            try check(drt_generate(handle, &p, buf.baseAddress, buf.count))
        }
        return out
    }

    public func cancel() { drt_session_cancel(handle) }
}

/// A Stable Diffusion export (optimum's text-to-image layout); generations may run on several threads.
public final class StableDiffusion: @unchecked Sendable {
    let handle: OpaquePointer

    public init(directory: String, backend: String? = nil, executionProvider: String? = nil) throws {
        var params = drt_model_params_default()
        var sd: OpaquePointer?
        let status = backend.withOptionalCString { b in
            executionProvider.withOptionalCString { ep in
                params.backend = b
                params.execution_provider = ep
                return drt_sd_load(directory, &params, nil, &sd)
            }
        }
        try check(status)
        handle = sd!
    }

    deinit { drt_sd_free(handle) }
}

/// Text to image step by step, as a SwiftUI view drives it: begin, step, preview, finish;
/// cancel() may be called from any thread. The session keeps its export alive.
public final class SdSession: @unchecked Sendable {
    let handle: OpaquePointer
    public private(set) var width: UInt32 = 0
    public private(set) var height: UInt32 = 0
    public private(set) var batch: UInt32 = 0

    public init(_ sd: StableDiffusion) throws {
        var session: OpaquePointer?
        try check(drt_sd_session_create(sd.handle, &session))
        handle = session!
    }

    deinit { drt_sd_session_free(handle) }

    /// `params` from drt_generate_params_default(), `sdParams` from drt_sd_params_default(), with
    /// their pointers (prompts) valid for the call. Returns the number of steps.
    public func begin(_ params: drt_generate_params, _ sdParams: drt_sd_params) throws -> UInt32 {
        var p = params
        var q = sdParams
        var total: UInt32 = 0
        try check(drt_sd_session_begin(handle, &p, &q, &total))
        try check(drt_sd_session_image_size(handle, &width, &height, &batch))
        return total
    }

    public func step() throws -> UInt32 {
        var done: UInt32 = 0
        try check(drt_sd_session_step(handle, &done))
        return done
    }

    /// The last step's prediction decoded: 8-bit RGB, rows top to bottom, images one after another.
    public func previewRGB8() throws -> [UInt8] { try rgb8 { drt_sd_session_preview_rgb8(handle, $0, $1) } }

    public func finishRGB8() throws -> [UInt8] { try rgb8 { drt_sd_session_finish_rgb8(handle, $0, $1) } }

    public func cancel() { drt_sd_session_cancel(handle) }

    func rgb8(_ call: (UnsafeMutablePointer<UInt8>?, Int) -> drt_status) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(width) * Int(height) * Int(batch) * 3)
        try out.withUnsafeMutableBufferPointer { buf in try check(call(buf.baseAddress, buf.count)) }
        return out
    }
}

extension Optional where Wrapped == String {
    func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let s): return s.withCString { body($0) }
        case .none: return body(nil)
        }
    }
}
