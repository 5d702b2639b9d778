// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Certification of Platone BAL measurements
/// @notice Anchors the Merkle root of each batch of measurements (and of grant decisions). A
/// measurement is certified when its leaf, with its proof, leads to an anchored root; anyone can
/// check that with `verify`, or off chain with OpenZeppelin's StandardMerkleTree format.
contract Certification {
    /// A batch was anchored in this block.
    event Anchored(bytes32 indexed root, address indexed anchorer, uint32 leafCount, bytes32 batchId);
    /// The owner allowed or stopped an anchorer.
    event AnchorerSet(address indexed anchorer, bool allowed);

    error NotOwner(address caller);
    error NotAnchorer(address caller);
    error EmptyBatch();
    error AlreadyAnchored(bytes32 root, uint64 blockNumber);

    /// The deployer: the only one who chooses anchorers.
    address public immutable owner;
    /// Who may anchor: the BAL operators' keys.
    mapping(address => bool) public isAnchorer;
    /// The block each root was anchored in; 0 for never (no transaction runs in block 0).
    mapping(bytes32 => uint64) private anchoredBlock;

    constructor() {
        owner = msg.sender;
        isAnchorer[msg.sender] = true;
        emit AnchorerSet(msg.sender, true);
    }

    /// Allows or stops `anchorer`. Only the owner.
    function setAnchorer(address anchorer, bool allowed) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        isAnchorer[anchorer] = allowed;
        emit AnchorerSet(anchorer, allowed);
    }

    /// Anchors a batch. Reverts for anyone but an anchorer, for an empty batch, and for a root
    /// already anchored (so a resumed certifier can never anchor a batch twice).
    function anchor(bytes32 root, uint32 leafCount, bytes32 batchId) external {
        if (!isAnchorer[msg.sender]) revert NotAnchorer(msg.sender);
        if (root == bytes32(0) || leafCount == 0) revert EmptyBatch();
        uint64 anchoredIn = anchoredBlock[root];
        if (anchoredIn != 0) revert AlreadyAnchored(root, anchoredIn);
        anchoredBlock[root] = uint64(block.number);
        emit Anchored(root, msg.sender, leafCount, batchId);
    }

    /// The block `root` was anchored in, or 0.
    function anchoredAt(bytes32 root) external view returns (uint64) {
        return anchoredBlock[root];
    }

    /// True when `root` is anchored and `proof` leads from `leaf` to it.
    function verify(bytes32 root, bytes32[] calldata proof, bytes32 leaf) external view returns (bool) {
        return anchoredBlock[root] != 0 && MerkleProof.verifyCalldata(proof, root, leaf);
    }
}
