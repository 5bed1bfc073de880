// A Swift face on the C API: handles freed by deinit, errors thrown with their status and message.
// It adds no behaviour; everything is the C call of the same name (include/diffusion_rt.h).
import CDiffusionRT

/// A failed call: the C status and drt_last_error()'s message.
public struct DiffusionRTError: Error, CustomStringConvertible {
    public let status: drt_status
    public let message: String
    public var description: String { "\(String(cString: drt_status_string(status))): \(message)" }
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
        var out = [Float](repeating: 0, count: Int(p.batch) * sampleLength)
        try out.withUnsafeMutableBufferPointer { buf in
            try check(drt_generate(handle, &p, buf.baseAddress, buf.count))
        }
        return out
    }

    public func cancel() { drt_session_cancel(handle) }
}

extension Optional where Wrapped == String {
    func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let s): return s.withCString { body($0) }
        case .none: return body(nil)
        }
    }
}
